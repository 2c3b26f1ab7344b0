"""The smoke suite against a scripted server: every check passes on good behaviour and the
right check fails (with a telling message) on each known misbehaviour."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from ascend.errors import SmokeError
from ascend.smoke import CHECKS, Endpoint, SmokeConfig, run_smoke, to_junit
from ascend.smoke.checks import choose_stop, percentile
from ascend.smoke.jsonschema import validate
from ascend.smoke.wire import SSEError, read_sse


def run(server, **cfg):
    return run_smoke(Endpoint.parse(server.url, server.model, timeout=30), SmokeConfig(**cfg))


def by_name(report):
    return {r.name: r for r in report.results}


def test_good_server_passes_every_check(server):
    report = run(server, concurrency=3, max_tokens=32)
    results = by_name(report)
    assert set(results) == set(CHECKS)
    bad = {n: r.detail for n, r in results.items() if r.status != "pass"}
    assert bad == {}
    assert report.ok
    m = results["concurrency"].metrics
    assert m["requests"] == 3 and m["tokens_per_s"] > 0 and m["ttft_p99_ms"] >= m["ttft_p50_ms"] > 0


# fault -> (check that must fail, words its message must contain)
FAULT_CASES = {
    "no_health": ("models", "/health -> HTTP 503"),
    "models_missing": ("models", "not 'scripted'"),
    "empty_content": ("chat", "empty content"),
    "usage_wrong": ("chat", "total_tokens"),
    "no_done": ("stream", "[DONE]"),
    "bad_sse": ("stream", "not JSON"),
    "stream_differs": ("stream", "!= non-streaming answer"),
    "ignore_max_tokens": ("max_tokens", "expected 'length'"),
    "ignore_stop": ("stop", "still contains"),
    "reasoning_leak": ("thinking", "no reasoning_content"),
    "answer_in_reasoning": ("thinking", "empty content"),
    "thinking_off_ignored": ("thinking", "thinking off: reasoning_content present"),
    "bad_tool_json": ("tools", "not valid JSON"),
    "tool_schema_mismatch": ("tools", "missing required property 'city'"),
    "tool_finish_stop": ("tools", "expected 'tool_calls'"),
    "tool_markup_leak": ("tools", "no tool_calls"),
    "zero_arg_empty_string": ("tools_no_args", "empty string"),
    "stream_tool_broken": ("tools_stream", "not valid JSON"),
    "tool_result_loop": ("tools_multi_turn", "another tool call"),
    "long_prompt_500": ("long_prompt", "HTTP 500"),
    "concurrency_fail": ("concurrency", "of 3 concurrent requests failed"),
    "bad_request_500": ("bad_request", "HTTP 500, expected 4xx"),
}


@pytest.mark.parametrize("fault", sorted(FAULT_CASES))
def test_each_fault_fails_its_check(server, fault):
    check, words = FAULT_CASES[fault]
    server.faults.add(fault)
    report = run(server, checks=["models", check] if check != "models" else ["models"], concurrency=3)
    result = by_name(report)[check]
    assert result.status == "fail", result
    assert words in result.detail, result.detail
    assert not report.ok


def test_threshold_breach_fails_concurrency(server):
    server.faults.add("slow")
    report = run(server, checks=["concurrency"], concurrency=2, thresholds={"itl_p50_ms": 5, "min_tokens_per_s": 1e6})
    r = by_name(report)["concurrency"]
    assert r.status == "fail"
    assert "itl_p50_ms" in r.detail and "> threshold 5" in r.detail and "tokens_per_s" in r.detail
    assert r.metrics["itl_p50_ms"] >= 20  # 30 ms per token on the server


def test_skips_say_why(server):
    report = run(server, checks=["models", "chat", "thinking", "tools"], thinking=False, tools=False)
    r = by_name(report)
    assert r["thinking"].status == "skip" and "reasoning parser" in r["thinking"].detail
    assert r["tools"].status == "skip" and "tool-call parser" in r["tools"].detail
    assert r["stream"].status == "skip" and "not selected" in r["stream"].detail
    assert report.ok


def test_long_prompt_skips_without_context_length(server):
    cfg = SmokeConfig(checks=["long_prompt"])
    report = run_smoke(Endpoint.parse(server.url, server.model), cfg)
    assert by_name(report)["long_prompt"].status == "skip"


def test_unreachable_endpoint_fails_once_then_skips():
    report = run_smoke(Endpoint.parse("http://127.0.0.1:9", "m", timeout=2), SmokeConfig())
    r = by_name(report)
    assert r["models"].status == "fail" and "cannot connect" in r["models"].detail
    assert all(x.status == "skip" and "unreachable" in x.detail for n, x in r.items() if n != "models")


def test_unknown_check_and_threshold_names_are_errors():
    with pytest.raises(SmokeError, match="did you mean 'tools_stream'"):
        run_smoke(Endpoint.parse("http://127.0.0.1:9", "m"), SmokeConfig(checks=["tool_stream"]))
    with pytest.raises(SmokeError, match="threshold 'ttft_p50'"):
        run_smoke(Endpoint.parse("http://127.0.0.1:9", "m"), SmokeConfig(thresholds={"ttft_p50": 1}))


def test_junit_report_shape(server):
    server.faults.add("ignore_stop")
    report = run(server, checks=["models", "stop"], thinking=False)
    root = ET.fromstring(to_junit(report).split("\n", 1)[1])
    assert root.get("tests") == str(len(CHECKS)) and root.get("failures") == "1"
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert cases["stop"].find("failure") is not None
    assert cases["chat"].find("skipped") is not None
    assert cases["models"].find("failure") is None and cases["models"].find("skipped") is None


def test_endpoint_parse_accepts_v1_suffix():
    ep = Endpoint.parse("127.0.0.1:8000/v1/", "m")
    assert ep.root == "http://127.0.0.1:8000" and ep.api == "http://127.0.0.1:8000/v1"


def test_choose_stop_and_percentile():
    assert choose_stop("Hello there , friend") == ","
    assert choose_stop("x") is None
    assert percentile([5, 1, 3, 2, 4], 50) == 3 and percentile([1, 2], 99) == 2 and percentile([7], 50) == 7


def test_jsonschema_subset():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "u": {"enum": ["a", "b"]}}, "required": ["n"], "additionalProperties": False}
    assert validate({"n": 3, "u": "a"}, schema) == []
    assert validate({"n": True}, schema) == ["$.n: expected integer, got bool True"]
    assert validate({"u": "c", "x": 1}, schema) == ["$: missing required property 'n'", "$.u: 'c' is not one of ['a', 'b']", "$: unexpected property 'x'"]


class FakeResponse:
    def __init__(self, lines, ctype="text/event-stream"):
        self.headers = {"content-type": ctype}
        self._lines = lines

    def iter_lines(self):
        return iter(self._lines)


def chunk(**delta):
    return "data: " + json.dumps({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})


def test_read_sse_rules():
    rec = read_sse(FakeResponse([": keep-alive", chunk(content="a"), "", chunk(content="b"), "", "data: [DONE]", ""]))
    assert rec.content == "ab" and rec.saw_done and len(rec.token_times) == 2
    with pytest.raises(SSEError, match="Content-Type"):
        read_sse(FakeResponse([], ctype="application/json"))
    with pytest.raises(SSEError, match="after \\[DONE\\]"):
        read_sse(FakeResponse([chunk(content="a"), "", "data: [DONE]", "", chunk(content="b"), ""]))
    with pytest.raises(SSEError, match="not an SSE field"):
        read_sse(FakeResponse(['{"object": "chat.completion.chunk"}', ""]))
    with pytest.raises(SSEError, match="expected 'chat.completion.chunk'"):
        read_sse(FakeResponse(['data: {"object": "chat.completion", "choices": []}', "", "data: [DONE]", ""]))


def test_flag_mode_defaults_are_the_schemas():
    """`ascend smoke --base-url ...` holds the endpoint to the same defaults a recipe does."""
    from ascend.recipe.schema import SmokeSection

    assert (SmokeConfig().concurrency, SmokeConfig().max_tokens) == (SmokeSection().concurrency, SmokeSection().max_tokens)
