"""Reasoning and tool-call parsing on model outputs in the published grammars.

The outputs below are written in the exact formats the models' chat templates produce (GLM-4.5:
newline-separated ``<arg_key>/<arg_value>``; GLM-4.7/GLM-5: the same without newlines; DeepSeek-V3:
fenced JSON after ``function<｜tool▁sep｜>``; DeepSeek-V3.1: ``NAME<｜tool▁sep｜>ARGS``; DeepSeek-V3.2:
DSML). They cover the cases real parsers get wrong (reference/deployments.md pain points 10–11).
Every case is also streamed in arbitrary chunkings and must give the non-streaming answer.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ascend.chat import OutputParser, parse_output

WEATHER_TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                     "filters": {"type": "object"}, "note": {"type": "string"}}}}},
                 {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]

GLM5_THINKING_PROMPT = "[gMASK]<sop><|user|>hi<|assistant|><think>"
GLM5_NO_THINKING_PROMPT = "[gMASK]<sop><|user|>hi<|assistant|></think>"
GLM45_PROMPT = "[gMASK]<sop><|user|>hi<|assistant|>"

# (name, parser kwargs, output, expected reasoning, expected content, expected calls [(name, args)])
CASES = [
    ("glm5 thinking then answer", dict(reasoning_parser="glm5", tool_call_parser="glm5", prompt=GLM5_THINKING_PROMPT),
     "The user greets me.</think>Hello! How can I help?", "The user greets me.", "Hello! How can I help?", []),
    ("glm5 thinking off", dict(reasoning_parser="glm5", tool_call_parser="glm5", prompt=GLM5_NO_THINKING_PROMPT),
     "Hello! How can I help?", None, "Hello! How can I help?", []),
    ("glm5 model repeats <think>", dict(reasoning_parser="glm5", tool_call_parser="glm5", prompt=GLM5_THINKING_PROMPT),
     "<think>Let me see.</think>\nFine.", "Let me see.", "Fine.", []),
    ("glm5 truncated while thinking", dict(reasoning_parser="glm5", tool_call_parser="glm5", prompt=GLM5_THINKING_PROMPT),
     "Still thinking about <b>this", "Still thinking about <b>this", "", []),
    ("glm45 model writes <think>", dict(reasoning_parser="glm45", tool_call_parser="glm45", prompt=GLM45_PROMPT),
     "<think>\nShort.\n</think>\n\nAnswer.", "\nShort.\n", "Answer.", []),
    ("glm45 model skips thinking: answer stays content",
     dict(reasoning_parser="glm45", tool_call_parser="glm45", prompt=GLM45_PROMPT),
     "Just the answer, no <think> at the start.", None, "Just the answer, no <think> at the start.", []),
    ("glm47 tool call with typed args", dict(reasoning_parser="glm47", tool_call_parser="glm47", prompt=GLM5_THINKING_PROMPT),
     "Need weather.</think>Checking.<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
     "<arg_key>days</arg_key><arg_value>3</arg_value></tool_call>",
     "Need weather.", "Checking.", [("get_weather", {"city": "Paris", "days": 3})]),
    ("glm45 tool call, newline layout", dict(reasoning_parser="glm45", tool_call_parser="glm45", prompt=GLM45_PROMPT),
     "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>New York</arg_value>\n"
     "<arg_key>filters</arg_key>\n<arg_value>{\"rain\": true, \"hours\": [1, 2]}</arg_value>\n</tool_call>",
     None, None, [("get_weather", {"city": "New York", "filters": {"rain": True, "hours": [1, 2]}})]),
    ("glm5 JSON-looking value of a string parameter stays a string",
     dict(reasoning_parser="glm5", tool_call_parser="glm5", prompt=GLM5_NO_THINKING_PROMPT),
     "<tool_call>get_weather<arg_key>city</arg_key><arg_value>123</arg_value>"
     "<arg_key>note</arg_key><arg_value>{\"not\": \"parsed\"}</arg_value></tool_call>",
     None, None, [("get_weather", {"city": "123", "note": "{\"not\": \"parsed\"}"})]),
    ("glm5 zero-argument tool", dict(reasoning_parser="glm5", tool_call_parser="glm5", prompt=GLM5_THINKING_PROMPT),
     "Time?</think><tool_call>get_time</tool_call>", "Time?", None, [("get_time", {})]),
    ("glm5 text after a tool call is kept", dict(reasoning_parser="glm5", tool_call_parser="glm5", prompt=GLM5_NO_THINKING_PROMPT),
     "<tool_call>get_time</tool_call>I will wait for the result.", None, "I will wait for the result.", [("get_time", {})]),
    ("glm5 two calls", dict(reasoning_parser="glm5", tool_call_parser="glm5", prompt=GLM5_NO_THINKING_PROMPT),
     "<tool_call>get_time</tool_call>\n<tool_call>get_weather<arg_key>city</arg_key><arg_value>Oslo</arg_value></tool_call>",
     None, None, [("get_time", {}), ("get_weather", {"city": "Oslo"})]),
    ("glm5 call cut off by max_tokens is returned as text", dict(reasoning_parser="glm5", tool_call_parser="glm5",
                                                                  prompt=GLM5_NO_THINKING_PROMPT),
     "Sure.<tool_call>get_weather<arg_key>ci", None, "Sure.<tool_call>get_weather<arg_key>ci", []),
    ("deepseek-v3 fenced JSON", dict(reasoning_parser=None, tool_call_parser="deepseekv3", prompt="<｜Assistant｜>"),
     "Let me look.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
     "{\"city\": \"Beijing\", \"days\": 2}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
     None, "Let me look.", [("get_weather", {"city": "Beijing", "days": 2})]),
    ("deepseek-v3.1 form, two calls, zero args", dict(reasoning_parser=None, tool_call_parser="deepseekv3", prompt="x"),
     "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{}<｜tool▁call▁end｜>"
     "<｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Rome\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
     None, None, [("get_time", {}), ("get_weather", {"city": "Rome"})]),
    ("deepseek-v3.2 DSML", dict(reasoning_parser="deepseek-v3", tool_call_parser="deepseekv32", prompt="<｜Assistant｜><think>"),
     "Plan.</think><｜DSML｜function_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"
     "<｜DSML｜parameter name=\"city\" string=\"true\">42</｜DSML｜parameter>\n"
     "<｜DSML｜parameter name=\"days\" string=\"false\">5</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜function_calls>",
     "Plan.", None, [("get_weather", {"city": "42", "days": 5})]),
    ("deepseek-r1 forced reasoning without <think>", dict(reasoning_parser="deepseek-r1", tool_call_parser=None, prompt="x"),
     "Hmm.\n</think>\n\nThe answer is 4.", "Hmm.\n", "The answer is 4.", []),
    ("no parsers: raw text", dict(reasoning_parser=None, tool_call_parser=None, prompt=GLM5_THINKING_PROMPT),
     "a</think>b<tool_call>x</tool_call>", None, "a</think>b<tool_call>x</tool_call>", []),
]


def _calls(calls):
    return [(c.name, json.loads(c.arguments)) for c in calls]


@pytest.mark.parametrize("name,kwargs,output,reasoning,content,calls", CASES, ids=[c[0] for c in CASES])
def test_non_streaming(name, kwargs, output, reasoning, content, calls):
    got_reasoning, got_content, got_calls = parse_output(output, tools=WEATHER_TOOLS, **kwargs)
    assert got_reasoning == reasoning
    assert got_content == content
    assert _calls(got_calls) == calls
    for call in got_calls:
        assert isinstance(json.loads(call.arguments), dict)


def _stream(output: str, cuts: list[int], kwargs: dict):
    parser = OutputParser(tools=WEATHER_TOOLS, **kwargs)
    pieces, last = [], 0
    for cut in sorted(set(cuts)) + [len(output)]:
        pieces.append(output[last:cut])
        last = cut
    reasoning, content, calls = "", "", []
    for piece in pieces:
        d = parser.feed(piece)
        reasoning, content, calls = reasoning + d.reasoning, content + d.content, calls + d.tool_calls
    d = parser.finish()
    return reasoning + d.reasoning, content + d.content, calls + d.tool_calls


@pytest.mark.parametrize("name,kwargs,output,reasoning,content,calls", CASES, ids=[c[0] for c in CASES])
def test_streaming_char_by_char_matches(name, kwargs, output, reasoning, content, calls):
    got_reasoning, got_content, got_calls = _stream(output, list(range(1, len(output))), kwargs)
    assert got_reasoning == (reasoning or "")
    assert got_content.strip() == (content or "").strip()
    assert _calls(got_calls) == calls


@settings(max_examples=60, deadline=None)
@given(case=st.sampled_from(CASES), data=st.data())
def test_streaming_any_chunking_matches(case, data):
    _, kwargs, output, reasoning, content, calls = case
    cuts = data.draw(st.lists(st.integers(min_value=1, max_value=max(1, len(output) - 1)), max_size=12))
    got_reasoning, got_content, got_calls = _stream(output, cuts, kwargs)
    assert got_reasoning == (reasoning or "")
    assert got_content.strip() == (content or "").strip()
    assert _calls(got_calls) == calls


def test_tool_parser_inactive_without_tools():
    _, content, calls = parse_output("<tool_call>get_time</tool_call>", reasoning_parser=None,
                                     tool_call_parser="glm5", prompt="", tools=None)
    assert calls == [] and content == "<tool_call>get_time</tool_call>"


def test_unknown_parser_names_are_rejected():
    with pytest.raises(ValueError, match="unknown tool-call parser"):
        OutputParser(reasoning_parser=None, tool_call_parser="nope", prompt="", tools=WEATHER_TOOLS)
    with pytest.raises(ValueError, match="unknown reasoning parser"):
        OutputParser(reasoning_parser="nope", tool_call_parser=None, prompt="", tools=None)
