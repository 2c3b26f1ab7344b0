"""`ascend convert --device` (and the recipe's convert.calibration.device): the calibration device.
On this host there is no torch_npu: asking for the NPU is one error line (exit 2) before any work,
and the output directory is left exactly as it was."""

import importlib.util
from pathlib import Path

import pytest
from test_convert_cli import assert_one_line_error, cli

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch_npu") is not None, reason="torch_npu is installed here")

GATE_OFF = [f"convert.calibration.thresholds.{k}=null" for k in ("layer_rel_l2", "logits_kl", "top1", "logits_rel_err")]


def tree(d: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``d`` with its size and mtime (ns)."""
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(d.rglob("*"))}


def recipe_args(src: Path, out: Path, *sets: str) -> list[str]:
    """tiny/glm47-cpu as a one-rank hf W8A8 conversion with the practice scheme (static q/k/v/o)."""
    return ["tiny/glm47-cpu", *(x for s in [f"model.path={src}", f"convert.output={out}", "convert.layout=hf",
                                            "hardware.devices_per_node=1", "parallel.ep=1", "convert.mtp=drop",
                                            "convert.precision.default=w8a8", "convert.precision.rules=[]",
                                            "convert.calibration.samples=9", "convert.calibration.max_len=24",
                                            *GATE_OFF, *sets] for x in ("--set", s))]


def test_npu_without_torch_npu_is_one_line_and_writes_nothing(ckpt_factory, tmp_path, capsys):
    src = ckpt_factory("glm4_moe")
    out = tmp_path / "new"
    code, _, err = cli(capsys, "convert", "--src", src, "--out", out, "--precision", "w8a8", "--device", "npu")
    assert_one_line_error(code, err, "--device npu", "torch_npu")
    assert not out.exists()


def test_npu_checked_before_touching_a_calibrated_output(ckpt_factory, tmp_path, capsys):
    """A finished conversion (its calibration done): --device npu still fails first, nothing changes."""
    src, out = ckpt_factory("glm4_moe"), tmp_path / "w8a8"
    code, _, err = cli(capsys, "convert", *recipe_args(src, out))
    assert code == 0, err
    assert (out / ".ascend-convert" / "calibration" / "calibration.json").is_file()
    before = tree(out)
    code, _, err = cli(capsys, "convert", *recipe_args(src, out), "--device", "npu", "--force")
    assert_one_line_error(code, err, "torch_npu")
    assert tree(out) == before


def test_recipe_field_picks_the_device(ckpt_factory, tmp_path, capsys):
    """convert.calibration.device (what `ascend run` passes on): npu is refused the same way; the
    field takes cpu or npu only."""
    src, out = ckpt_factory("glm4_moe"), tmp_path / "r"
    code, _, err = cli(capsys, "convert", *recipe_args(src, out, "convert.calibration.device=npu"))
    assert_one_line_error(code, err, "torch_npu")
    assert not out.exists()
    code, _, err = cli(capsys, "convert", *recipe_args(src, out, "convert.calibration.device=gpu"), "--dry-run")
    assert code == 2 and "convert.calibration.device" in err
    assert not out.exists()


def test_device_is_not_needed_without_static_w8a8(ckpt_factory, tmp_path, capsys):
    """A BF16 output calibrates nothing, so the device is not used (nor checked)."""
    src, out = ckpt_factory("glm4_moe"), tmp_path / "bf16"
    code, _, err = cli(capsys, "convert", "--src", src, "--out", out, "--precision", "bf16", "--device", "npu")
    assert code == 0, err
    assert not (out / ".ascend-convert" / "calibration").exists()
