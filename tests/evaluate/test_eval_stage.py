"""The eval stage inside `ascend run`, and the run report page every run writes."""

from __future__ import annotations

from pathlib import Path

from ascend.pipeline import run_pipeline
from ascend.pipeline.stages import RunContext, stage_eval
from ascend.recipe import load_recipe


def test_eval_stage_skipped_when_disabled_and_blocked_without_service(tmp_path):
    off = load_recipe("tiny/glm5-cpu", ["eval.enabled=false"])
    assert stage_eval(RunContext(off, tmp_path)).status == "skipped"
    on = load_recipe("tiny/glm5-cpu")
    res = stage_eval(RunContext(on, tmp_path))
    assert res.status == "blocked" and "serve stage did not run" in res.summary
    assert not (tmp_path / "eval.json").exists()


def test_every_run_writes_the_page_and_keeps_earlier_reports(tmp_path):
    recipe = load_recipe("tiny/glm5-cpu")
    for _ in range(2):
        report, error = run_pipeline(recipe, run_dir=tmp_path, until="plan")
        assert error is None
    history = sorted(Path(tmp_path, "history").glob("*.json"))
    assert len(history) == 2
    html = (tmp_path / "report.html").read_text()
    assert 'id="memory-chart"' in html and html.count("OK — 1 of 1 stages done") == 3  # verdict + 2 history rows
