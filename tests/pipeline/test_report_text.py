"""report.txt shows what `ascend run` checked: the stage lines and every smoke check."""

from __future__ import annotations

from ascend.pipeline.report import RunReport, StageResult


def test_report_text_lists_the_smoke_checks():
    checks = {"chat": {"status": "pass", "detail": "answered in 0.2 s"},
              "tools": {"status": "fail", "detail": "no tool call in the reply"},
              "long_prompt": {"status": "skip", "detail": "max_model_len unknown"}}
    report = RunReport("tiny/glm5-cpu", "abc", "runs/x", stages=[
        StageResult("serve", "ok", "2 ranks"),
        StageResult("smoke", "failed", "1 passed, 1 failed, 1 skipped", details={"checks": checks}),
    ])
    lines = report.to_text().splitlines()
    smoke = next(i for i, line in enumerate(lines) if line.startswith("smoke"))
    listed = lines[smoke + 1: smoke + 4]
    for (name, check), line in zip(checks.items(), listed):
        assert line.split()[:2] == [name, check["status"]] and line.endswith(check["detail"])
    assert lines[smoke - 1].startswith("serve")
