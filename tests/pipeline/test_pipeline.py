"""`ascend run` orchestration with stand-in stages: ordering, skipping, blocked and failed
stages, --from/--until, exit codes and the report files. The real stages run in tests/e2e."""

from __future__ import annotations

import json

import pytest

from ascend.errors import CheckFailed, ConvertError
from ascend.pipeline import run_pipeline, stage_name
from ascend.pipeline import stages as st
from ascend.pipeline.report import StageResult
from ascend.recipe import load_recipe


@pytest.fixture
def recipe():
    return load_recipe("tiny/glm5-cpu")


@pytest.fixture
def fake_stages(monkeypatch):
    """Every stage succeeds and records that it ran; tests override single stages."""
    ran: list[str] = []

    def ok(name):
        def run(ctx):
            ran.append(name)
            return StageResult(name, "ok", f"{name} done")
        return run

    funcs = {name: ok(name) for name in st.STAGE_FUNCS}
    monkeypatch.setattr(st, "STAGE_FUNCS", funcs)
    import ascend.pipeline as pipeline

    monkeypatch.setattr(pipeline, "STAGE_FUNCS", funcs)
    return funcs, ran


def statuses(report):
    return {s.stage: s.status for s in report.stages}


def test_all_stages_in_order_and_report_files(recipe, fake_stages, tmp_path):
    funcs, ran = fake_stages
    report, error = run_pipeline(recipe, run_dir=tmp_path)
    assert error is None and ran == ["plan", "source", "convert", "verify", "serve", "smoke", "bench", "eval"]
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["ok"] is True and [s["stage"] for s in data["stages"]] == ran
    assert "OK — 8 of 8 stages done" in (tmp_path / "report.txt").read_text()
    assert (tmp_path / "recipe.yaml").read_text().startswith("name: tiny-glm5-cpu")


def test_smoke_without_a_service_is_blocked_not_faked(recipe, fake_stages, tmp_path):
    """``--from smoke``: the real smoke stage has no service to test and says so."""
    funcs, ran = fake_stages
    funcs["smoke"] = st.stage_smoke
    report, error = run_pipeline(recipe, run_dir=tmp_path, start="smoke")
    smoke = next(r for r in report.stages if r.stage == "smoke")
    assert error is None and smoke.status == "blocked" and "serve stage did not run" in smoke.summary
    assert not (tmp_path / "smoke.json").exists()


def test_failure_stops_the_run_and_is_returned(recipe, fake_stages, tmp_path):
    funcs, ran = fake_stages

    def broken(ctx):
        raise ConvertError("cannot convert", fix="do something")

    funcs["convert"] = broken
    report, error = run_pipeline(recipe, run_dir=tmp_path)
    assert isinstance(error, ConvertError)
    s = statuses(report)
    assert s["convert"] == "failed" and s["verify"] == s["serve"] == s["smoke"] == "blocked"
    assert report.verdict().startswith("FAILED at convert")


def test_keep_going_after_a_failed_check(recipe, fake_stages, tmp_path):
    funcs, ran = fake_stages

    def mismatch(ctx):
        raise st.StageFailed(StageResult("verify", "failed", "logits differ"))

    funcs["verify"] = mismatch
    report, error = run_pipeline(recipe, run_dir=tmp_path, keep_going=True)
    assert isinstance(error, CheckFailed) and error.exit_code == 3
    assert statuses(report)["smoke"] == "ok"  # still served and smoke-tested, to see the effect


def test_from_until(recipe, fake_stages, tmp_path):
    funcs, ran = fake_stages
    report, _ = run_pipeline(recipe, run_dir=tmp_path, start="convert", until="serve")
    assert ran == ["convert", "verify", "serve"]
    assert statuses(report)["plan"] == "not-run" and statuses(report)["smoke"] == "not-run"
    assert stage_name("fetch", "--until") == "source"
    with pytest.raises(Exception, match="is not a stage"):
        run_pipeline(recipe, run_dir=tmp_path, until="deploy")


def test_cli_exit_codes(cli, fake_stages, tmp_path):
    funcs, ran = fake_stages
    res = cli("run", "tiny/glm5-cpu", "--run-dir", str(tmp_path), "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["ok"] is True
    assert "plan     ok    plan done" in res.err  # stage lines go to stderr with --json

    def mismatch(ctx):
        raise st.StageFailed(StageResult("smoke", "failed", "1 failed"))

    funcs["smoke"] = mismatch
    res = cli("run", "tiny/glm5-cpu", "--run-dir", str(tmp_path))
    assert res.code == 3 and "FAILED at smoke" in res.out


def test_tiny_source_is_skipped_when_already_generated(recipe, tmp_path, monkeypatch):
    """The real source stage with a stand-in generator: generated once, then skipped."""
    calls = []

    def fake_write(out, family, **kw):
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        calls.append(kw)
        return out

    import ascend.tiny.scripted as scripted

    monkeypatch.setattr(scripted, "write_scripted_checkpoint", fake_write)
    r = load_recipe("tiny/glm5-cpu", [f"model.path={tmp_path / 'src'}"])
    ctx = st.RunContext(r, tmp_path / "run")
    first = st.stage_source(ctx)
    second = st.stage_source(ctx)
    assert first.status == "ok" and second.status == "skipped" and len(calls) == 1
    assert calls[0]["fp8"] is True and calls[0]["conversations"]  # the smoke suite's conversations
    r2 = load_recipe("tiny/glm5-cpu", [f"model.path={tmp_path / 'src'}", "model.tiny.seed=1"])
    assert st.stage_source(st.RunContext(r2, tmp_path / "run")).status == "ok"  # other recipe: regenerated
    assert len(calls) == 2


def test_tiny_source_never_overwrites_a_foreign_directory(tmp_path):
    from ascend.errors import CheckpointError

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "precious.safetensors").write_text("x")
    r = load_recipe("tiny/glm5-cpu", [f"model.path={tmp_path / 'src'}"])
    with pytest.raises(CheckpointError, match="was not generated by this run directory's recipe"):
        st.stage_source(st.RunContext(r, tmp_path / "run"))
    assert (tmp_path / "src" / "precious.safetensors").is_file()
