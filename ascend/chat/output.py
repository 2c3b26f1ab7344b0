"""Model output → OpenAI message fields: reasoning first, then tool calls in what remains.

:class:`OutputParser` is incremental; the non-streaming answer is the same parser fed the whole
text, so streamed deltas always concatenate to the non-streaming message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ascend.chat.reasoning import ReasoningSplitter, get_reasoning_grammar, starts_in_reasoning
from ascend.chat.tool_calls import ToolCall, ToolCallExtractor, get_tool_grammar


@dataclass
class Delta:
    reasoning: str = ""
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content or self.tool_calls)


class OutputParser:
    def __init__(self, *, reasoning_parser: str | None, tool_call_parser: str | None, prompt: str,
                 tools: list[dict] | None):
        self.splitter = None
        if reasoning_parser:
            grammar = get_reasoning_grammar(reasoning_parser)
            self.splitter = ReasoningSplitter(grammar, starts_in_reasoning(grammar, prompt))
        self.extractor = ToolCallExtractor(get_tool_grammar(tool_call_parser), tools) if (tool_call_parser and tools) else None

    def _content(self, text: str, final: bool) -> tuple[str, list[ToolCall]]:
        if self.extractor is None:
            return text, []
        content, calls = self.extractor.feed(text)
        if final:
            rest, more = self.extractor.finish()
            content, calls = content + rest, calls + more
        return content, calls

    def feed(self, text: str) -> Delta:
        if self.splitter is not None:
            reasoning, text = self.splitter.feed(text)
        else:
            reasoning = ""
        content, calls = self._content(text, final=False)
        return Delta(reasoning, content, calls)

    def finish(self) -> Delta:
        reasoning, text = self.splitter.finish() if self.splitter is not None else ("", "")
        content, calls = self._content(text, final=True)
        return Delta(reasoning, content, calls)

    @property
    def reasoning_seen(self) -> bool:
        return self.splitter is not None and self.splitter.reasoning_seen


def parse_output(text: str, **kwargs) -> tuple[str | None, str | None, list[ToolCall]]:
    """Non-streaming: ``(reasoning_content, content, tool_calls)``; ``content`` is None when the
    answer is only tool calls (whitespace between calls is not content)."""
    parser = OutputParser(**kwargs)
    first, last = parser.feed(text), parser.finish()
    reasoning = first.reasoning + last.reasoning
    content = first.content + last.content
    calls = first.tool_calls + last.tool_calls
    if calls and not content.strip():
        content = None
    return (reasoning if parser.reasoning_seen else None), content, calls
