"""The smoke suite: proof that an OpenAI-compatible endpoint (xLLM on Ascend, the CPU engine)
serves the model correctly — readiness, chat, streaming, limits, thinking, tool calls, long
prompts, concurrency and error handling — each check pass / fail / skipped with a reason.

Library use::

    from ascend.smoke import Endpoint, SmokeConfig, run_smoke
    report = run_smoke(Endpoint.parse("http://127.0.0.1:18000", "GLM-5-w8a8"), SmokeConfig())
    assert report.ok, report.summary_line()
"""

from ascend.smoke.checks import CHECKS, THRESHOLDS, SmokeConfig
from ascend.smoke.report import CheckResult, SmokeReport, render_table, to_json, to_junit
from ascend.smoke.suite import config_from_recipe, run_smoke, validate_config, wait_ready
from ascend.smoke.wire import Endpoint

__all__ = [
    "CHECKS",
    "THRESHOLDS",
    "CheckResult",
    "Endpoint",
    "SmokeConfig",
    "SmokeReport",
    "config_from_recipe",
    "render_table",
    "run_smoke",
    "to_json",
    "to_junit",
    "validate_config",
    "wait_ready",
]
