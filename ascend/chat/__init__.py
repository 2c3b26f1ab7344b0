"""Chat templates, reasoning and tool-call parsing (GLM and DeepSeek grammars)."""

from ascend.chat.output import Delta, OutputParser, parse_output
from ascend.chat.reasoning import REASONING_GRAMMARS, split_reasoning
from ascend.chat.template import ChatTemplate, TemplateError
from ascend.chat.tool_calls import TOOL_GRAMMARS, ToolCall, extract_tool_calls

__all__ = [
    "ChatTemplate", "TemplateError", "OutputParser", "Delta", "parse_output", "split_reasoning",
    "extract_tool_calls", "ToolCall", "REASONING_GRAMMARS", "TOOL_GRAMMARS",
]
