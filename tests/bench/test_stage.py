"""The `bench` stage of `ascend run`: off unless the recipe enables it, needs the service, writes
runs/<name>/bench/, and a broken threshold fails the run with exit 3."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ascend.bench import load_bench
from ascend.pipeline import stages as st
from ascend.recipe import load_recipe


def ctx_for(tmp_path, sets, service=None):
    recipe = load_recipe("tiny/glm5-cpu", sets)
    return st.RunContext(recipe, tmp_path / "run", service=service)


def fake_service(srv):
    return SimpleNamespace(base_url=srv.url, served_model=srv.model)


def test_on_in_tiny_recipes_off_elsewhere():
    assert load_recipe("tiny/glm5-cpu").bench.enabled is True
    assert load_recipe("glm5/a3-w8a8").bench.enabled is False


def test_disabled_is_skipped_and_no_service_is_blocked(tmp_path):
    res = st.stage_bench(ctx_for(tmp_path, ["bench.enabled=false"]))
    assert res.status == "skipped" and "bench.enabled" in res.summary
    res = st.stage_bench(ctx_for(tmp_path, []))
    assert res.status == "blocked" and "serve stage did not run" in res.summary


def test_runs_against_the_service_and_writes_the_run_dir(fake_server, word_tokenizer, tmp_path):
    srv = fake_server(ttft=0.05, gap=0.01)
    sets = [f"convert.output={word_tokenizer}", "bench.concurrency=[1,2]", "bench.num_prompts=2",
            "bench.workloads=[{input_len: 10, output_len: 8}]"]
    ctx = ctx_for(tmp_path, sets, fake_service(srv))
    res = st.stage_bench(ctx)
    assert res.status == "ok" and "output tok/s at concurrency" in res.summary, res.summary
    data = load_bench(ctx.run_dir)
    assert data is not None and len(data["levels"]) == 2
    assert all((ctx.run_dir / "bench" / name).stat().st_size > 0 for name in data["charts"].values())
    assert res.details["charts"] == data["charts"]


def test_broken_threshold_fails_the_stage(fake_server, word_tokenizer, tmp_path):
    srv = fake_server(ttft=0.05, gap=0.01)
    sets = [f"convert.output={word_tokenizer}", "bench.concurrency=[1]", "bench.num_prompts=2",
            "bench.workloads=[{input_len: 10, output_len: 8}]", "bench.thresholds.min_output_tokens_per_s=100000"]
    with pytest.raises(st.StageFailed) as err:
        st.stage_bench(ctx_for(tmp_path, sets, fake_service(srv)))
    assert err.value.exit_code == 3 and err.value.result.status == "failed"
    assert "bench.thresholds.min_output_tokens_per_s = 100000 broken at concurrency 1" in err.value.result.summary


def test_load_bench_is_none_without_a_run(tmp_path):
    assert load_bench(tmp_path) is None
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "bench.json").write_text("{half")
    assert load_bench(tmp_path) is None
