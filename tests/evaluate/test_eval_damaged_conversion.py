"""End to end on the real CPU engine: the scripted tiny GLM-5 (known answers) converted, served
and evaluated by `ascend run`; then the same conversion with damaged weights fails the eval
threshold (exit 3, naming the task and its score).

The scripted model answers every plain question "Hello to you and your world!", which is the
right option of 3 of the 4 shipped tiny-choice items: an intact conversion scores exactly 0.75.
Damage: rank 0 and rank 1 swap their slices of layer 0's kv_b_proj (a wrong TP split of a
tensor the calibrated W8A8 scheme keeps in BF16: it gives each head its key and value), so no
marker is detected and the model says its fallback instead of the script.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from e2e_helpers import ascend, recipe_args, swap_rank_slices  # noqa: E402

pytestmark = pytest.mark.slow
ONLY_MODELS = ["--set", "smoke.checks=[models]"]  # the eval is under test here, not the smoke suite


def test_intact_passes_and_damaged_fails_the_threshold(tmp_path):
    args = recipe_args("glm5-cpu", tmp_path)
    res = ascend("run", *args, *ONLY_MODELS, "--json", cwd=tmp_path, timeout=900)
    assert res.code == 0, res.err[-3000:]
    stages = {s["stage"]: s for s in res.report()["stages"]}
    assert stages["eval"]["status"] == "ok"
    tasks = {t["name"]: t for t in json.loads((tmp_path / "run" / "eval.json").read_text())["tasks"]}
    assert (tasks["tiny-choice"]["correct"], tasks["tiny-choice"]["samples"]) == (3, 4)
    assert tasks["tiny-math"]["correct"] == 0  # the scripted model says no numbers
    assert all(a["reply"].startswith("Hello to you and your world!") for a in tasks["tiny-choice"]["answers"])
    assert (tmp_path / "run" / "report.html").is_file()

    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "converted", broken)
    swap_rank_slices(broken, "model.layers.0.self_attn.kv_b_proj.weight")
    run_args = [a if not a.startswith("convert.output=") else f"convert.output={broken}" for a in args]
    res = ascend("run", *run_args, *ONLY_MODELS, "--from", "serve", "--json", cwd=tmp_path, timeout=600)
    assert res.code == 3, res.err[-3000:]
    stages = {s["stage"]: s for s in res.report()["stages"]}
    assert stages["smoke"]["status"] == "ok" and stages["eval"]["status"] == "failed"
    assert "tiny-choice: 0.000 = 0/4 (threshold 0.75)" in stages["eval"]["summary"]
    # both runs are in the run directory's history, and the page lists them
    assert len(list((tmp_path / "run" / "history").glob("*.json"))) == 2
