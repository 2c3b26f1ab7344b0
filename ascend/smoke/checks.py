"""The smoke checks. Each takes a :class:`Context` and returns a pass detail (optionally with
metrics) or raises :class:`Fail` / :class:`Skip` with the reason.

API-level checks use the official ``openai`` client (what users' code runs); wire-level checks
(SSE framing, ``[DONE]``, status codes, error bodies) use raw ``httpx`` so nothing is smoothed
over. Every request sends ``model`` = the served id, ``temperature`` = 0 and a small
``max_tokens`` (xLLM defaults to 5120), and ``stop`` as a list (xLLM's proto is ``repeated``).
Thinking is switched with ``chat_template_kwargs.enable_thinking`` (vLLM, SGLang and xLLM).
"""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Callable

from ascend.smoke.context import (  # noqa: F401 (THRESHOLDS, SmokeConfig: the suite's public names)
    MARKUP,
    THRESHOLDS,
    Context,
    Fail,
    Skip,
    SmokeConfig,
    baseline,
    check_usage,
    no_markup,
    reasoning_of,
)
from ascend.smoke.jsonschema import validate
from ascend.smoke.probes import (
    ARITHMETIC,
    COUNTING,
    GREETING,
    TIME_QUESTION,
    TIME_TOOL,
    WEATHER_QUESTION,
    WEATHER_TOOL,
    long_prompt,
    story_prompt,
    tool_result_messages,
    user,
)
from ascend.smoke.wire import StreamRecord

# --- readiness ---------------------------------------------------------------------------------


def check_models(ctx: Context) -> str:
    """Readiness: ``/health`` answers 200 and ``/v1/models`` lists the served id."""
    h = ctx.http.get(ctx.ep.root + "/health", headers=ctx.ep.headers(), timeout=30)
    if h.status_code != 200:
        raise Fail(f"GET /health -> HTTP {h.status_code}: {h.text[:120]!r}")
    r = ctx.http.get(ctx.ep.api + "/models", headers=ctx.ep.headers(), timeout=30)
    if r.status_code != 200:
        raise Fail(f"GET /v1/models -> HTTP {r.status_code}: {r.text[:120]!r}")
    try:
        ids = [m["id"] for m in r.json()["data"]]
    except (ValueError, KeyError, TypeError):
        raise Fail(f"GET /v1/models is not {{'data': [{{'id': ...}}]}}: {r.text[:120]!r}") from None
    if ctx.ep.model not in ids:
        raise Fail(f"/v1/models lists {ids}, not {ctx.ep.model!r} (requests with this model name will be rejected)")
    card = next(m for m in r.json()["data"] if m["id"] == ctx.ep.model)
    if ctx.cfg.max_model_len is None and isinstance(card.get("max_model_len"), int):
        ctx.cfg = replace(ctx.cfg, max_model_len=card["max_model_len"])  # what the server reports
    return f"/health 200; /v1/models lists {ctx.ep.model!r}"


# --- basic generation --------------------------------------------------------------------------


def check_chat(ctx: Context) -> str:
    resp = baseline(ctx)
    choice = resp.choices[0]
    content = choice.message.content or ""
    if not content.strip():
        raise Fail(f"empty content (finish_reason={choice.finish_reason!r}, reasoning={reasoning_of(choice.message)[:60]!r})")
    if choice.finish_reason not in ("stop", "length"):
        raise Fail(f"finish_reason {choice.finish_reason!r}, expected 'stop' or 'length'")
    no_markup(content, "content")
    return f"{content[:48]!r} finish={choice.finish_reason}, " + check_usage(resp.usage, ctx.cfg.max_tokens)


def check_stream(ctx: Context) -> tuple[str, dict[str, float]]:
    rec = ctx.stream(GREETING, stream_options={"include_usage": True})
    base = baseline(ctx)
    ref = base.choices[0]
    if rec.content != (ref.message.content or ""):
        raise Fail(f"streamed deltas {rec.content[:60]!r} != non-streaming answer {(ref.message.content or '')[:60]!r} at temperature 0")
    if rec.finish_reason != ref.finish_reason:
        raise Fail(f"streamed finish_reason {rec.finish_reason!r} != non-streaming {ref.finish_reason!r}")
    usage = rec.usage
    note = "no usage chunk"
    if usage is not None:
        if usage.get("completion_tokens") != base.usage.completion_tokens:
            raise Fail(f"stream usage.completion_tokens {usage.get('completion_tokens')} != non-streaming {base.usage.completion_tokens}")
        note = f"usage {usage.get('prompt_tokens')}+{usage.get('completion_tokens')}"
    return f"{len(rec.chunks)} chunks + [DONE], deltas == non-streaming answer, {note}", {"chunks": len(rec.chunks)}


def check_max_tokens(ctx: Context) -> str:
    limit = 4
    resp = ctx.chat(user(COUNTING), max_tokens=limit)
    choice = resp.choices[0]
    if choice.finish_reason != "length":
        raise Fail(f"max_tokens={limit}: finish_reason {choice.finish_reason!r}, expected 'length'")
    used = resp.usage.completion_tokens if resp.usage else None
    if used is None or used > limit:
        raise Fail(f"max_tokens={limit}: usage.completion_tokens is {used}")
    return f"max_tokens={limit}: finish_reason 'length', {used} tokens"


def choose_stop(text: str) -> str | None:
    """A stop string from the middle of ``text``: the first word of its second half (or a char)."""
    words = text.split()
    if len(words) >= 2:
        return words[len(words) // 2]
    stripped = text.strip()
    return stripped[len(stripped) // 2] if len(stripped) >= 2 else None


def check_stop(ctx: Context) -> str:
    ref = (baseline(ctx).choices[0].message.content or "").strip()
    stop = choose_stop(ref)
    if stop is None or ref.index(stop) == 0:
        raise Skip(f"answer {ref!r} is too short to pick a stop string from")
    expected = ref[: ref.index(stop)]
    resp = ctx.chat(GREETING, stop=[stop])
    choice = resp.choices[0]
    got = choice.message.content or ""
    if stop in got:
        raise Fail(f"stop={[stop]!r}: content still contains it: {got[:80]!r}")
    if got.strip() != expected.strip():
        raise Fail(f"stop={[stop]!r}: content {got[:80]!r}, expected the text before it {expected[:80]!r}")
    if choice.finish_reason != "stop":
        raise Fail(f"stop={[stop]!r}: finish_reason {choice.finish_reason!r}, expected 'stop'")
    return f"stop={[stop]!r}: cut at the stop string, finish_reason 'stop'"


# --- thinking ----------------------------------------------------------------------------------


def check_thinking(ctx: Context) -> str:
    if not ctx.cfg.thinking:
        raise Skip("no reasoning parser configured (serve.reasoning_parser): thinking is returned inline")
    question = user(ARITHMETIC)
    limit = ctx.budget(ctx.cfg.thinking_max_tokens)
    on = ctx.chat(question, thinking=True, max_tokens=limit).choices[0]
    reasoning, content = reasoning_of(on.message), on.message.content or ""
    if not reasoning.strip():
        raise Fail(f"thinking on: no reasoning_content (content={content[:80]!r})")
    if not content.strip():
        raise Fail(
            f"thinking on: empty content, finish_reason {on.finish_reason!r} — the answer went into "
            f"reasoning_content ({reasoning[-80:]!r}) or thinking used all {limit} tokens"
        )
    no_markup(content, "thinking on: content")
    no_markup(reasoning, "thinking on: reasoning_content")
    off = ctx.chat(question, thinking=False, max_tokens=limit).choices[0]
    if reasoning_of(off.message).strip():
        raise Fail(f"thinking off: reasoning_content present: {reasoning_of(off.message)[:80]!r}")
    if not (off.message.content or "").strip():
        raise Fail(f"thinking off: empty content (finish_reason {off.finish_reason!r})")
    no_markup(off.message.content, "thinking off: content")
    return f"on: {len(reasoning)} chars reasoning + {content[:30]!r}; off: {off.message.content[:30]!r}, no reasoning"


# --- tool calls --------------------------------------------------------------------------------


def _need_tools(ctx: Context) -> None:
    if not ctx.cfg.tools:
        raise Skip("no tool-call parser configured (serve.tool_call_parser)")


def _check_call(name: str, arguments: Any, tools: list[dict[str, Any]], where: str) -> dict[str, Any]:
    """Validate one call against the offered tools; returns the parsed arguments."""
    offered = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    if name not in offered:
        raise Fail(f"{where}: called {name!r}, offered {sorted(offered)}")
    if not isinstance(arguments, str):
        raise Fail(f"{where}: arguments is {type(arguments).__name__}, expected a JSON string")
    if arguments.strip() == "":
        raise Fail(f"{where}: arguments is an empty string, expected JSON ('{{}}' for no arguments)")
    try:
        args = json.loads(arguments)
    except json.JSONDecodeError as err:
        raise Fail(f"{where}: arguments are not valid JSON ({err.msg}): {arguments[:120]!r}") from None
    problems = validate(args, offered[name])
    if problems:
        raise Fail(f"{where}: arguments {arguments[:120]} do not match the schema: {'; '.join(problems)}")
    return args


def _tool_call_nonstream(ctx: Context, prompt: str, tools: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    resp = ctx.chat(user(prompt), tools=tools, tool_choice="auto", max_tokens=ctx.budget(256))
    choice = resp.choices[0]
    calls = choice.message.tool_calls or []
    if not calls:
        raise Fail(f"no tool_calls (finish_reason {choice.finish_reason!r}, content {(choice.message.content or '')[:100]!r})")
    if choice.finish_reason != "tool_calls":
        raise Fail(f"finish_reason {choice.finish_reason!r}, expected 'tool_calls'")
    no_markup(choice.message.content or "", "content")
    call = calls[0]
    if call.type != "function" or not call.id:
        raise Fail(f"tool call has type {call.type!r} and id {call.id!r}; expected type 'function' and an id")
    args = _check_call(call.function.name, call.function.arguments, tools, "tool call")
    return call.function.name, args


def check_tools(ctx: Context) -> str:
    _need_tools(ctx)
    name, args = _tool_call_nonstream(ctx, WEATHER_QUESTION, [WEATHER_TOOL])
    return f"{name}({json.dumps(args)}), finish_reason 'tool_calls'"


def check_tools_stream(ctx: Context) -> str:
    _need_tools(ctx)
    tools = [WEATHER_TOOL]
    rec = ctx.stream(user(WEATHER_QUESTION), tools=tools, tool_choice="auto", max_tokens=ctx.budget(256))
    calls = rec.tool_calls()
    if not calls:
        raise Fail(f"no tool_calls deltas (finish_reason {rec.finish_reason!r}, content {rec.content[:100]!r})")
    if rec.finish_reason != "tool_calls":
        raise Fail(f"finish_reason {rec.finish_reason!r}, expected 'tool_calls'")
    no_markup(rec.content, "streamed content")
    if not calls[0]["id"]:
        raise Fail("streamed tool call has no id")
    args = _check_call(calls[0]["name"], calls[0]["arguments"], tools, "streamed tool call")
    return f"{calls[0]['name']}({json.dumps(args)}) assembled from deltas, finish_reason 'tool_calls'"


def check_tools_no_args(ctx: Context) -> str:
    _need_tools(ctx)
    name, args = _tool_call_nonstream(ctx, TIME_QUESTION, [TIME_TOOL])
    if args != {}:
        raise Fail(f"{name} takes no arguments, got {json.dumps(args)}")
    return f"{name}({{}}), finish_reason 'tool_calls'"


def check_tools_multi_turn(ctx: Context) -> str:
    _need_tools(ctx)
    messages = tool_result_messages()
    resp = ctx.chat(messages, tools=[WEATHER_TOOL], tool_choice="auto", max_tokens=ctx.budget(256))
    choice = resp.choices[0]
    content = choice.message.content or ""
    if choice.message.tool_calls:
        raise Fail(f"answered the tool result with another tool call: {choice.message.tool_calls[0].function.name}")
    if not content.strip():
        raise Fail(f"empty answer after the tool result (finish_reason {choice.finish_reason!r})")
    no_markup(content, "content")
    return f"answer after tool result: {content[:48]!r}"


# --- load --------------------------------------------------------------------------------------


def check_long_prompt(ctx: Context) -> str:
    length = ctx.cfg.max_model_len
    if not length:
        raise Skip("context length unknown: set serve.max_model_len in the recipe or pass --max-model-len")
    out = 8

    def prompt_tokens(repeats: int) -> int:
        resp = ctx.chat(user(long_prompt(repeats)), max_tokens=1)
        return resp.usage.prompt_tokens

    p0, p8 = prompt_tokens(0), prompt_tokens(8)
    per_repeat = (p8 - p0) / 8
    if per_repeat <= 0:
        raise Fail(f"usage.prompt_tokens does not grow with the prompt ({p0} -> {p8})")
    target = int(0.9 * length) - out
    repeats = max(1, int((target - p0) / per_repeat))
    resp = ctx.chat(user(long_prompt(repeats)), max_tokens=out)
    used = resp.usage.prompt_tokens
    if not (0.75 * length <= used <= length):
        raise Fail(f"prompt of {used} tokens is not near max_model_len {length}")
    choice = resp.choices[0]
    if not ((choice.message.content or "").strip() or reasoning_of(choice.message).strip()):
        raise Fail(f"{used}-token prompt: empty answer (finish_reason {choice.finish_reason!r})")
    return f"{used}-token prompt of max_model_len {length}: answered"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def check_concurrency(ctx: Context) -> tuple[str, dict[str, float]]:
    n = ctx.cfg.concurrency
    max_tokens = ctx.cfg.max_tokens

    def one(i: int) -> StreamRecord:
        return ctx.stream(user(story_prompt(i)), max_tokens=max_tokens, stream_options={"include_usage": True})

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        outcomes: list[StreamRecord | BaseException] = []
        for f in futures:
            try:
                outcomes.append(f.result())
            except Exception as err:  # noqa: BLE001 - every failure is reported below
                outcomes.append(err)
    wall = time.monotonic() - start
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    if errors:
        raise Fail(f"{len(errors)} of {n} concurrent requests failed: {errors[0]}")
    recs = [o for o in outcomes if isinstance(o, StreamRecord)]
    empty = [i for i, r in enumerate(recs) if not r.token_times]
    if empty:
        raise Fail(f"{len(empty)} of {n} concurrent streams produced no tokens")
    ttft = [(r.token_times[0] - r.start) * 1000 for r in recs]
    itl = [(b - a) * 1000 for r in recs for a, b in zip(r.token_times, r.token_times[1:])]
    tokens = sum((r.usage or {}).get("completion_tokens") or len(r.token_times) for r in recs)
    m = {
        "requests": float(n),
        "ttft_p50_ms": percentile(ttft, 50),
        "ttft_p99_ms": percentile(ttft, 99),
        "itl_p50_ms": percentile(itl, 50) if itl else 0.0,
        "itl_p99_ms": percentile(itl, 99) if itl else 0.0,
        "tokens_per_s": tokens / wall if wall > 0 else 0.0,
    }
    m = {k: round(v, 2) for k, v in m.items()}
    broken = []
    for name, limit in ctx.cfg.thresholds.items():
        metric, kind = THRESHOLDS[name]
        value = m[metric]
        if (kind == "max" and value > limit) or (kind == "min" and value < limit):
            broken.append(f"{metric} {value:g} {'>' if kind == 'max' else '<'} threshold {limit:g}")
    summary = (
        f"{n} streams ok; TTFT p50 {m['ttft_p50_ms']:.0f} ms p99 {m['ttft_p99_ms']:.0f} ms; "
        f"ITL p50 {m['itl_p50_ms']:.0f} ms p99 {m['itl_p99_ms']:.0f} ms; {m['tokens_per_s']:.1f} tok/s"
    )
    if broken:
        raise Fail(summary + " — " + "; ".join(broken), m)
    return summary, m


def check_bad_request(ctx: Context) -> str:
    body = {"model": ctx.ep.model, "messages": "this is not a list of messages", "max_tokens": 4}
    r = ctx.http.post(ctx.ep.api + "/chat/completions", json=body, headers=ctx.ep.headers(), timeout=60)
    if not 400 <= r.status_code < 500:
        raise Fail(f"malformed request (messages is a string) -> HTTP {r.status_code}, expected 4xx: {r.text[:120]!r}")
    h = ctx.http.get(ctx.ep.root + "/health", headers=ctx.ep.headers(), timeout=30)
    if h.status_code != 200:
        raise Fail(f"after the malformed request GET /health -> HTTP {h.status_code}")
    return f"malformed request -> HTTP {r.status_code}; server still healthy"


# Name -> check, in the order they run.
CHECKS: dict[str, Callable[[Context], Any]] = {
    "models": check_models,
    "chat": check_chat,
    "stream": check_stream,
    "max_tokens": check_max_tokens,
    "stop": check_stop,
    "thinking": check_thinking,
    "tools": check_tools,
    "tools_stream": check_tools_stream,
    "tools_no_args": check_tools_no_args,
    "tools_multi_turn": check_tools_multi_turn,
    "long_prompt": check_long_prompt,
    "concurrency": check_concurrency,
    "bad_request": check_bad_request,
}
