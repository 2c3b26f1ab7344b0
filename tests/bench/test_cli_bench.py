"""`ascend bench` through the real CLI against the scripted server: thresholds (exit 3 naming
the broken one), dataset errors (exit 2, one line), charts and the bench.json schema."""

from __future__ import annotations

import json

import pytest

from ascend.bench import CHART_FILES, load_bench

FAST = {"ttft": 0.05, "gap": 0.02}


def bench_args(srv, tok, out, *extra):
    return ("bench", "--base-url", srv.url + "/v1", "--model", srv.model, "--tokenizer", str(tok), "--out", str(out),
            "--concurrency", "1,2", "--num-prompts", "2", "--input-len", "12", "--output-len", "8", *extra)


def test_writes_bench_json_and_png_charts(cli, fake_server, word_tokenizer, tmp_path):
    srv = fake_server(**FAST)
    out = tmp_path / "run" / "bench"
    res = cli(*bench_args(srv, word_tokenizer, out))
    assert res.code == 0, res.err + res.out
    data = json.loads((out / "bench.json").read_text())
    assert data["schema"] == "ascend-bench/1" and data["ok"] is True and data["broken"] == []
    assert [(lv["concurrency"], lv["input_len"], lv["output_len"]) for lv in data["levels"]] == [(1, 12, 8), (2, 12, 8)]
    metric_keys = {"mean", "p50", "p90", "p99", "max"}
    for lv in data["levels"]:
        assert lv["requests"] == lv["completed"] == 2 and lv["errors"] == 0
        assert all(set(lv[k]) == metric_keys for k in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"))
        assert lv["output_tokens_per_s"] > 0 and lv["requests_per_s"] > 0
        assert lv["input_tokens_mean"] == 5  # the server's usage.prompt_tokens
    # random prompts of the asked length, counted with the tokenizer (no chat template here)
    prompts = [b["messages"][0]["content"] for b in srv.bodies]
    assert all(len(p.split()) == 12 for p in prompts) and len(set(prompts)) == len(prompts)
    assert data["charts"] == CHART_FILES and data["charts_skipped"] is None
    for name in CHART_FILES.values():
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, name
    assert load_bench(tmp_path / "run") == data
    assert "bench fake-model (chat)" in res.out and str(out) in res.out


def test_broken_threshold_exits_3_naming_it(cli, fake_server, word_tokenizer, tmp_path):
    srv = fake_server(**FAST)
    sets = [f"serve.port={srv.port}", "bench.concurrency=[1]", "bench.num_prompts=2",
            "bench.workloads=[{input_len: 12, output_len: 8}]",
            "bench.thresholds={max_ttft_p99_ms: 10, min_output_tokens_per_s: 1}"]  # TTFT is ~50 ms
    res = cli("bench", "tiny/glm5-cpu", *[a for s in sets for a in ("--set", s)], "--model", srv.model,
              "--tokenizer", str(word_tokenizer), "--out", str(tmp_path / "b"))
    assert res.code == 3, res.err
    lines = [x for x in res.err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "bench.thresholds.max_ttft_p99_ms = 10 broken at concurrency 1 (in 12 / out 8)" in lines[0]
    assert "min_output_tokens_per_s" not in lines[0]  # that one holds
    data = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert data["ok"] is False and len(data["broken"]) == 1


@pytest.mark.parametrize("content,line,what", [
    ('{"prompt": "w1 w2"}\nnot json\n', 2, "not JSON"),
    ('{"prompt": "w1"}\n\n{"text": "w1"}\n', 3, 'exactly one of "prompt" or "messages"'),
    ('{"messages": "hi"}\n', 1, '"messages" must be a non-empty list'),
    ('{"prompt": "w1", "max_tokens": 0}\n', 1, '"max_tokens" must be a positive integer'),
    ("\n\n", None, "no prompts"),
])
def test_bad_dataset_exits_2_with_one_line(cli, fake_server, word_tokenizer, tmp_path, content, line, what):
    srv = fake_server(**FAST)
    ds = tmp_path / "prompts.jsonl"
    ds.write_text(content)
    res = cli(*bench_args(srv, word_tokenizer, tmp_path / "b", "--dataset", str(ds)))
    assert res.code == 2, res.err
    err = res.err.strip().splitlines()
    assert len(err) == 1 and str(ds) in err[0] and what in err[0], err
    if line:
        assert f"line {line}:" in err[0]
    assert "Traceback" not in res.err and srv.bodies == []  # refused before any request


def test_missing_dataset_file_and_bad_flags_exit_2(cli, fake_server, word_tokenizer, tmp_path):
    srv = fake_server(**FAST)
    res = cli(*bench_args(srv, word_tokenizer, tmp_path / "b", "--dataset", str(tmp_path / "nope.jsonl")))
    assert res.code == 2 and "nope.jsonl: cannot read it" in res.err
    res = cli(*bench_args(srv, word_tokenizer, tmp_path / "b"), "--concurrency", "0,2")
    assert res.code == 2 and "--concurrency '0,2'" in res.err
    res = cli("bench", "--base-url", srv.url, "--model", srv.model, "--out", str(tmp_path / "b"))
    assert res.code == 2 and "random prompts need the model's tokenizer" in res.err
    res = cli(*bench_args(srv, word_tokenizer, tmp_path / "b"), "--set", "bench.seed=1")
    assert res.code == 2 and "--set needs a RECIPE" in res.err


def test_dataset_prompts_are_sent(cli, fake_server, word_tokenizer, tmp_path):
    srv = fake_server(**FAST)
    ds = tmp_path / "prompts.jsonl"
    ds.write_text('{"prompt": "w1 w2"}\n{"messages": [{"role": "user", "content": "w3"}], "max_tokens": 4}\n')
    res = cli(*bench_args(srv, word_tokenizer, tmp_path / "b", "--dataset", str(ds)))
    assert res.code == 0, res.err
    sent = [(b["messages"][0]["content"], b["max_tokens"]) for b in srv.bodies]
    assert sent[1:3] == [("w1 w2", 8), ("w3", 4)] and len(sent) == 1 + 2 + 2  # warm-up + two levels
    assert json.loads((tmp_path / "b" / "bench.json").read_text())["levels"][0]["input_len"] == "dataset"


def test_unreachable_endpoint_is_one_line_exit_2(cli, word_tokenizer, tmp_path):
    res = cli("bench", "--base-url", "http://127.0.0.1:9", "--model", "m", "--tokenizer", str(word_tokenizer),
              "--out", str(tmp_path / "b"), "--concurrency", "1", "--num-prompts", "1", "--input-len", "4")
    assert res.code == 2 and "warm-up request" in res.err and len(res.err.strip().splitlines()) == 1


def test_thresholds_at_a_level_not_swept_is_a_recipe_error(cli):
    """Else the thresholds would silently never be checked."""
    res = cli("bench", "tiny/glm5-cpu", "--set", "bench.thresholds_at=[8]")
    assert res.code == 2 and "thresholds_at [8] are not in concurrency [1, 4]" in res.err
