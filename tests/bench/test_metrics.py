"""Metric arithmetic against a scripted streaming server with known delays: TTFT, ITL, TPOT,
E2E and token counts (usage or tokenizer) within 5 % of the scripted values."""

from __future__ import annotations

import pytest
from fake_sse_server import TEXT_CHUNKS_AFTER_FIRST, WORDS_IN_SCRIPT

from ascend.bench import Target, run_bench
from ascend.recipe.schema import BenchSection

TTFT, GAP = 0.5, 0.12  # long enough that connection set-up on a busy machine stays well under 5 %


def config(**kw) -> BenchSection:
    return BenchSection.model_validate({"concurrency": [1], "num_prompts": 3, "warmup": 0,
                                        "workloads": [{"input_len": 6, "output_len": 8}], **kw})


def close(measured_ms: float, expected_s: float) -> bool:
    return abs(measured_ms / 1000 - expected_s) <= 0.05 * expected_s


@pytest.mark.parametrize("usage", [WORDS_IN_SCRIPT, 15, None], ids=["usage", "usage-differs-from-text", "no-usage"])
def test_ttft_tpot_itl_e2e_match_the_script(fake_server, word_tokenizer, tmp_path, usage):
    srv = fake_server(ttft=TTFT, gap=GAP, usage=usage)
    data = run_bench(config(), Target.parse(srv.url, srv.model, str(word_tokenizer)), tmp_path, charts=False)
    (level,) = data["levels"]
    # output tokens: the server's usage when given (even when it differs from the text), else
    # the generated text (reasoning + content + tool call) through the tokenizer
    tokens = usage or WORDS_IN_SCRIPT
    assert level["completed"] == 3 and level["errors"] == 0
    assert level["output_tokens_mean"] == tokens
    e2e = TTFT + TEXT_CHUNKS_AFTER_FIRST * GAP
    tpot = (e2e - TTFT) / (tokens - 1)
    # medians of 3 requests: one request slowed by a busy machine does not decide
    assert close(level["ttft_ms"]["p50"], TTFT), level["ttft_ms"]  # the role-only chunk is not the first token
    assert close(level["tpot_ms"]["p50"], tpot), (level["tpot_ms"], tpot)
    assert close(level["e2e_ms"]["p50"], e2e), level["e2e_ms"]
    # the empty chunk half-way through a gap makes no gap of its own (else the mean drops by 20 %)
    for stat in ("mean", "p50"):
        assert close(level["itl_ms"][stat], GAP), level["itl_ms"]
    # each request asked for the usage chunk and an exact length
    assert all(b["stream_options"] == {"include_usage": True} and b["ignore_eos"] is True and b["max_tokens"] == 8
               for b in srv.bodies)
    assert abs(level["output_tokens_per_s"] - 3 * tokens / level["duration_s"]) < 0.01 * level["output_tokens_per_s"]


def test_concurrency_gate_and_throughput(fake_server, word_tokenizer, tmp_path):
    """4 requests at concurrency 1 take 4 request times; at concurrency 4, one."""
    srv = fake_server(ttft=0.2, gap=0.05)
    data = run_bench(config(concurrency=[1, 4], num_prompts=4), Target.parse(srv.url, srv.model, str(word_tokenizer)), tmp_path, charts=False)
    one, four = data["levels"]
    e2e = 0.2 + TEXT_CHUNKS_AFTER_FIRST * 0.05
    assert abs(one["duration_s"] - 4 * e2e) < 0.1 * 4 * e2e, one["duration_s"]
    assert four["duration_s"] < 1.4 * e2e, four["duration_s"]  # with 2 in flight it would take 2 x e2e
    assert 2.8 < four["requests_per_s"] / one["requests_per_s"] < 4.4


def test_goodput_counts_requests_meeting_every_slo(fake_server, word_tokenizer, tmp_path):
    srv = fake_server(ttft=TTFT, gap=GAP)
    target = Target.parse(srv.url, srv.model, str(word_tokenizer))
    met = run_bench(config(slo={"ttft_ms": 900, "tpot_ms": 120}), target, tmp_path / "a", charts=False)["levels"][0]
    missed = run_bench(config(slo={"ttft_ms": 900, "tpot_ms": 30}), target, tmp_path / "b", charts=False)["levels"][0]  # TPOT is ~69 ms
    assert met["goodput_ratio"] == 1.0 and met["good_requests"] == 3
    assert missed["goodput_ratio"] == 0.0 and missed["goodput_per_s"] == 0.0


def test_failed_requests_are_errors_not_samples(fake_server, word_tokenizer, tmp_path):
    srv = fake_server(ttft=0.05, gap=0.01, fail_every=2)
    data = run_bench(config(num_prompts=4), Target.parse(srv.url, srv.model, str(word_tokenizer)), tmp_path, charts=False)
    level = data["levels"][0]
    assert level["errors"] == 2 and level["completed"] == 2 and level["error_rate"] == 0.5
    assert "HTTP 500" in level["first_error"]
    assert data["broken"] == ["bench.thresholds.max_error_rate = 0 broken at concurrency 1 (in 6 / out 8): 0.5"]


def test_fake_stream_is_valid_for_the_openai_client(fake_server):
    """The scripted SSE is a valid stream for the official client (an independent parser)."""
    import openai

    srv = fake_server(ttft=0.01, gap=0.01)
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x")
    chunks = list(client.chat.completions.create(model=srv.model, messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, stream_options={"include_usage": True}))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    args = "".join(tc.function.arguments or "" for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or [])
    assert content == " w2 w3 w4 w7" and args == " w5 w6"
    assert chunks[-1].usage.completion_tokens == WORDS_IN_SCRIPT


def test_request_over_the_timeout_is_an_error(fake_server, word_tokenizer, tmp_path):
    srv = fake_server(ttft=0.05, gap=0.3)  # streams for 1.25 s: each read is quick, the whole is not
    data = run_bench(config(num_prompts=1, timeout_s=0.6), Target.parse(srv.url, srv.model, str(word_tokenizer)),
                     tmp_path, charts=False)
    level = data["levels"][0]
    assert level["errors"] == 1 and level["first_error"] == "timed out after 0.6 s"
    assert data["broken"] and "max_error_rate" in data["broken"][0]


def test_without_matplotlib_bench_json_is_still_written(fake_server, word_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # import matplotlib -> ImportError
    srv = fake_server(ttft=0.01, gap=0.01)
    data = run_bench(config(num_prompts=1), Target.parse(srv.url, srv.model, str(word_tokenizer)), tmp_path)
    assert data["charts"] == {} and "pip install matplotlib" in data["charts_skipped"]
    assert (tmp_path / "bench.json").is_file() and not list(tmp_path.glob("*.png"))


def test_generated_text_of_every_chunk_kind():
    """What counts as generated (TTFT, ITL, the tokenizer count): chat content, reasoning, tool-call
    names and arguments, completions text; not roles, empty deltas or usage-only chunks."""
    from ascend.bench.client import generated_text

    delta = lambda d: {"choices": [{"index": 0, "delta": d}]}  # noqa: E731
    assert generated_text(delta({"role": "assistant", "content": ""})) == ""
    assert generated_text({"choices": [], "usage": {"completion_tokens": 3}}) == ""
    assert generated_text(delta({"reasoning_content": "hm"})) == "hm"
    assert generated_text(delta({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}]})) == "f{}"
    assert generated_text({"choices": [{"index": 0, "text": " a b"}]}) == " a b"
