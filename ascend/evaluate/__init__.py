"""Accuracy of a served model on standard tasks: GSM8K-style math and MMLU / C-Eval-style
multiple choice, through any OpenAI-compatible endpoint, with pass/fail thresholds per task.

Library use::

    from ascend.evaluate import run_eval
    from ascend.smoke import Endpoint
    report = run_eval(Endpoint.parse("http://127.0.0.1:18000", "GLM-5-w8a8"), recipe.eval)
    assert report.ok, report.summary()

Why a lean engine here and not evalscope or lm-eval: see docs/bench-and-eval.md ("Eval").
"""

from ascend.evaluate.runner import EvalReport, TaskResult, run_eval
from ascend.evaluate.tasks import EvalDataError, Item, load_items

__all__ = ["EvalDataError", "EvalReport", "Item", "TaskResult", "load_items", "run_eval"]
