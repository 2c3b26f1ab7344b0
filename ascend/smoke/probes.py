"""The smoke suite's requests, and the kind of answer each one asks for.

The checks (``checks.py``) send these requests. A fixture built to answer them (the scripted tiny
checkpoint, ``ascend.tiny.scripted``) is designed against ``probe_conversations()``, so the suite
and that model cannot disagree about what is asked. Plain data: no I/O, no third-party imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Conversation:
    """One request: ``messages`` with the ``tools`` offered and thinking on or off, and ``expect``,
    the kind of answer a well-behaved model gives: ``answer`` (text), ``call_weather`` /
    ``call_time`` (a call to that tool), ``after_tool`` (text that answers a tool result).
    """

    name: str
    messages: list[dict[str, Any]]
    expect: str
    tools: list[dict[str, Any]] | None = None
    thinking: bool = False


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


GREETING = user("Say hello in one short sentence.")
ARITHMETIC = "What is 2 + 3? Answer with one number."
COUNTING = "Count from one to fifty in words, separated by commas."
WEATHER_QUESTION = "What is the weather in Paris right now? Use the tool."
TIME_QUESTION = "What time is it on the server? Use the tool."
FILLER = "The quick brown fox jumps over the lazy dog. "


def long_prompt(repeats: int) -> str:
    return FILLER * repeats + "Say hello."


def story_prompt(i: int) -> str:
    return f"Write a short story about lighthouse number {i}."


WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the server's current time. Takes no arguments.",
        "parameters": {"type": "object", "properties": {}},
    },
}


def tool_result_messages() -> list[dict[str, Any]]:
    return [
        *user(WEATHER_QUESTION),
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": '{"city": "Paris", "temperature_c": 18, "condition": "sunny"}'},
    ]


def probe_conversations() -> list[Conversation]:
    """The suite's requests with their expected kind of answer (what ``ascend run`` designs the
    scripted tiny checkpoint against when it generates one)."""
    return [
        Conversation("chat", GREETING, "answer"),
        Conversation("thinking-on", user(ARITHMETIC), "answer", thinking=True),
        Conversation("thinking-off", user(ARITHMETIC), "answer"),
        Conversation("max_tokens", user(COUNTING), "answer"),
        Conversation("long_prompt", user(long_prompt(4)), "answer"),
        Conversation("concurrency", user(story_prompt(1)), "answer"),
        Conversation("tools", user(WEATHER_QUESTION), "call_weather", tools=[WEATHER_TOOL]),
        Conversation("tools_no_args", user(TIME_QUESTION), "call_time", tools=[TIME_TOOL]),
        Conversation("tools_multi_turn", tool_result_messages(), "after_tool", tools=[WEATHER_TOOL]),
    ]
