"""When convert reuses the calibration already in its output, and when it must not.

Before: any finished ``calibration.json`` in the output was reused as is. A conversion whose
accuracy gate had failed (exit 3) went through on a plain rerun with the failed calibration, and
a rerun with other calibration settings (data, samples, smoothing) silently kept the old ranges.
"""

from __future__ import annotations

import json

import pytest

from ascend.convert.jobs import ConvertOptions
from ascend.convert.pipeline import convert
from ascend.errors import CheckFailed, ConvertError
from ascend.quant.store import CALIBRATION_DIR


def _cfg(**kw):
    from ascend.recipe.schema import CalibrationSection

    off = {"layer_rel_l2": None, "logits_kl": None, "top1": None, "logits_rel_err": None}
    return CalibrationSection(**{"samples": 9, "max_len": 24, "thresholds": {**off, **kw.pop("thresholds", {})}, **kw})


def _info(out):
    return json.loads((out / CALIBRATION_DIR / "calibration.json").read_text())


def test_a_failed_gate_fails_again_on_rerun(tiny_dir, tmp_path):
    src, out = tiny_dir("deepseek_v3"), tmp_path / "o"
    opts = ConvertOptions.from_flags(precision="w8a8", mtp="drop")
    strict = _cfg(thresholds={"layer_rel_l2": 1e-6})
    for _ in range(2):
        with pytest.raises(CheckFailed, match="accuracy gate failed"):
            convert(src, out, opts, calibration=strict)
        assert not (out / "ascend-manifest.json").exists() and not list(out.glob("quant_model_weights*"))
    first = (out / CALIBRATION_DIR / "calibration.safetensors").stat().st_mtime_ns
    # relaxing the threshold reuses the measured calibration (nothing is computed again)
    assert convert(src, out, opts, calibration=_cfg()).complete
    assert (out / CALIBRATION_DIR / "calibration.safetensors").stat().st_mtime_ns == first


def test_other_calibration_settings_are_another_conversion(tiny_dir, tmp_path):
    src, out = tiny_dir("deepseek_v3"), tmp_path / "o"
    opts = ConvertOptions.from_flags(precision="w8a8", mtp="drop")
    assert convert(src, out, opts, calibration=_cfg()).complete
    assert _info(out)["smoothing"] == {"alpha": 0.5}
    other = _cfg(smoothing_alpha=0.8)
    with pytest.raises(ConvertError, match="another recipe or with other options"):
        convert(src, out, opts, calibration=other)
    assert _info(out)["smoothing"] == {"alpha": 0.5}  # refused before anything was calibrated
    assert convert(src, out, opts, calibration=other, force=True).complete
    assert _info(out)["smoothing"] == {"alpha": 0.8}
    again = convert(src, out, opts, calibration=other)  # the same settings: complete, nothing rewritten
    assert again.complete and not again.files_written


def test_flag_mode_uses_the_calibration_there_unless_it_failed_its_gate(tiny_dir, tmp_path):
    """`ascend calibrate` then `ascend convert` without a recipe: the calibration made (with its
    own settings) is used as it is; one that failed its gate is refused (exit 3), not written."""
    from ascend.quant.calibrate import calibrate

    src, out = tiny_dir("deepseek_v3"), tmp_path / "o"
    opts = ConvertOptions.from_flags(precision="w8a8", mtp="drop")
    with pytest.raises(CheckFailed):
        calibrate(src, out, _cfg(samples=10, thresholds={"layer_rel_l2": 1e-6}))
    with pytest.raises(CheckFailed, match="failed its accuracy gate"):
        convert(src, out, opts)
    assert not list(out.glob("quant_model_weights*"))
    calibrate(src, out, _cfg(samples=10))  # the same measurement, gate off: passes, nothing recomputed
    assert convert(src, out, opts).complete
    assert _info(out)["samples"] + _info(out)["held_out"]["samples"] == 10  # its settings, not the defaults


def test_verify_holds_a_calibrated_output_to_its_gate(tiny_dir, tmp_path):
    """Before: verify held every quantized output to top-1 >= 50 % only, whatever bounds its
    calibration was gated with."""
    from ascend.convert.verify import verify
    from ascend.quant.store import GATE

    src, out = tiny_dir("deepseek_v3"), tmp_path / "o"
    assert convert(src, out, ConvertOptions.from_flags(precision="w8a8", mtp="drop"), calibration=_cfg()).complete
    report = verify(out, against=str(src))
    assert report.ok and report.logits["class"] == "calibrated W8A8", report.problems
    assert 0 < report.logits["rel_err"] < 1 and report.logits["kl"] >= 0
    gate = out / CALIBRATION_DIR / GATE
    data = json.loads(gate.read_text())
    data["thresholds"]["logits_rel_err"] = report.logits["rel_err"] / 2  # as if the recipe had asked for that
    gate.write_text(json.dumps(data))
    from ascend.convert import w8a8_pieces

    w8a8_pieces._LOADED.clear()  # one load per process: this test changed the file
    strict = verify(out, against=str(src))
    assert not strict.ok and "logits rel. error" in strict.problems[0] and "accuracy gate" in strict.problems[0]
