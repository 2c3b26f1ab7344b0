"""Tool-call parsers for the GLM and DeepSeek grammars (xLLM ``--tool_call_parser`` names).

Grammars (model chat templates; reference/xllm.md §4):
- ``glm45``: ``<tool_call>NAME\\n<arg_key>K</arg_key>\\n<arg_value>V</arg_value>\\n…</tool_call>``;
  ``glm47`` / ``glm5`` write the same without the newlines. One tolerant grammar covers all three.
  String values are written raw, other values as JSON, so a value is decoded as JSON only when
  the tool's schema says the parameter is not a string (a JSON-looking string stays a string).
- ``deepseekv3``: ``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\nARGS\\n```
  <｜tool▁call▁end｜>…<｜tool▁calls▁end｜>`` (also the V3.1 form ``…begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>``).
- ``deepseekv32``: DSML ``<｜DSML｜function_calls><｜DSML｜invoke name="N"><｜DSML｜parameter name="K"
  string="true|false">V</｜DSML｜parameter></｜DSML｜invoke></｜DSML｜function_calls>``.

Streaming emits text outside tool-call blocks as it arrives and each tool call once its block is
complete (name and full JSON arguments in one delta), so a client never sees half a JSON object.
Text after a tool call is content too (nothing the model wrote is dropped).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from ascend.chat.reasoning import held_back


@dataclass
class ToolCall:
    name: str
    arguments: str  # a JSON object, as text
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def to_openai(self, index: int | None = None) -> dict:
        out = {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}
        if index is not None:
            out = {"index": index, **out}
        return out


def _param_schema(tools: list[dict] | None, name: str, key: str) -> dict | None:
    for tool in tools or []:
        fn = tool.get("function", tool)
        if fn.get("name") == name:
            props = (fn.get("parameters") or {}).get("properties") or {}
            return props.get(key)
    return None


def _is_string_param(schema: dict | None) -> bool | None:
    if not schema or "type" not in schema:
        return None
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return types == ["string"] or ("string" in types and len(types) == 1)


def _decode_value(raw: str, schema: dict | None):
    """A GLM argument value: raw text for string parameters, JSON otherwise (raw text if not JSON)."""
    if _is_string_param(schema):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


class BlockGrammar:
    """A grammar whose tool calls sit in delimited blocks; subclasses parse one block."""

    block_start: str
    block_end: str

    def parse_block(self, block: str, tools: list[dict] | None) -> list[ToolCall]:
        raise NotImplementedError


class GlmGrammar(BlockGrammar):
    block_start, block_end = "<tool_call>", "</tool_call>"
    _pair = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.DOTALL)

    def parse_block(self, block: str, tools):
        inner = block[len(self.block_start): -len(self.block_end)]
        cut = inner.find("<arg_key>")
        name = (inner if cut < 0 else inner[:cut]).strip()
        if not name:
            return []
        args = {}
        for key, raw in self._pair.findall(inner if cut >= 0 else ""):
            key = key.strip()
            args[key] = _decode_value(raw, _param_schema(tools, name, key))
        return [ToolCall(name, json.dumps(args, ensure_ascii=False))]


class DeepSeekV3Grammar(BlockGrammar):
    block_start, block_end = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
    _call = re.compile(r"<｜tool▁call▁begin｜>(.*?)<｜tool▁call▁end｜>", re.DOTALL)
    _fenced = re.compile(r"^\s*(?:function)?\s*<｜tool▁sep｜>\s*(\S+?)\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
    _v31 = re.compile(r"^\s*(\S+?)\s*<｜tool▁sep｜>\s*(.*?)\s*$", re.DOTALL)

    def parse_block(self, block: str, tools):
        calls = []
        for body in self._call.findall(block):
            match = self._fenced.match(body)
            if match is None:
                match = self._v31.match(body)
            if match is None:
                continue
            name, args = match.group(1), match.group(2).strip() or "{}"
            try:
                args = json.dumps(json.loads(args), ensure_ascii=False)
            except json.JSONDecodeError:
                pass  # hand the client what the model wrote; it can see it is not JSON
            calls.append(ToolCall(name, args))
        return calls


class DeepSeekV32Grammar(BlockGrammar):
    block_start, block_end = "<｜DSML｜function_calls>", "</｜DSML｜function_calls>"
    _invoke = re.compile(r'<｜DSML｜invoke\s+name="([^"]+)"\s*>(.*?)</｜DSML｜invoke>', re.DOTALL)
    _param = re.compile(r'<｜DSML｜parameter\s+name="([^"]+)"\s+string="(true|false)"\s*>(.*?)</｜DSML｜parameter>', re.DOTALL)

    def parse_block(self, block: str, tools):
        calls = []
        for name, body in self._invoke.findall(block):
            args = {}
            for key, is_string, raw in self._param.findall(body):
                if is_string == "true":
                    args[key] = raw
                else:
                    try:
                        args[key] = json.loads(raw)
                    except json.JSONDecodeError:
                        args[key] = raw
            calls.append(ToolCall(name, json.dumps(args, ensure_ascii=False)))
        return calls


TOOL_GRAMMARS: dict[str, type[BlockGrammar]] = {
    "glm45": GlmGrammar,
    "glm47": GlmGrammar,
    "glm5": GlmGrammar,
    "deepseekv3": DeepSeekV3Grammar,
    "deepseekv32": DeepSeekV32Grammar,
}


def get_tool_grammar(name: str) -> BlockGrammar:
    try:
        return TOOL_GRAMMARS[name]()
    except KeyError:
        raise ValueError(f"unknown tool-call parser {name!r}; known: {', '.join(sorted(TOOL_GRAMMARS))}") from None


class ToolCallExtractor:
    """Streaming: ``feed(text) -> (content_delta, [ToolCall])``; ``finish()`` flushes.

    An unterminated block at the end (the model hit max_tokens mid-call) is returned as content:
    the caller sees exactly what was generated rather than a broken call.
    """

    def __init__(self, grammar: BlockGrammar, tools: list[dict] | None):
        self.grammar = grammar
        self.tools = tools
        self.buffer = ""
        self.in_block = False

    def feed(self, delta: str) -> tuple[str, list[ToolCall]]:
        self.buffer += delta
        content, calls = [], []
        g = self.grammar
        while self.buffer:
            if not self.in_block:
                idx = self.buffer.find(g.block_start)
                if idx < 0:
                    keep = held_back(self.buffer, (g.block_start,))
                    content.append(self.buffer[: len(self.buffer) - keep])
                    self.buffer = self.buffer[len(self.buffer) - keep:]
                    break
                content.append(self.buffer[:idx])
                self.buffer = self.buffer[idx:]
                self.in_block = True
            end = self.buffer.find(g.block_end)
            if end < 0:
                break
            block = self.buffer[: end + len(g.block_end)]
            self.buffer = self.buffer[end + len(g.block_end):]
            self.in_block = False
            parsed = g.parse_block(block, self.tools)
            if parsed:
                calls.extend(parsed)
            else:
                content.append(block)  # not a call after all: keep the text
        return "".join(content), calls

    def finish(self) -> tuple[str, list[ToolCall]]:
        rest, self.buffer, self.in_block = self.buffer, "", False
        return rest, []


def extract_tool_calls(text: str, grammar: BlockGrammar, tools: list[dict] | None) -> tuple[str, list[ToolCall]]:
    """Non-streaming: ``(content without tool-call blocks, calls)``."""
    ex = ToolCallExtractor(grammar, tools)
    c1, calls = ex.feed(text)
    c2, _ = ex.finish()
    return c1 + c2, calls
