"""The calibration run: resume after a real kill, the accuracy gate, --device, load_calibration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ascend.errors import CheckFailed, ConvertError
from ascend.quant.accuracy import check_gate
from ascend.quant.calibrate import calibrate
from ascend.quant.store import CALIBRATION_DIR, load_calibration
from ascend.recipe.schema import CalibrationThresholds

ROOT = Path(__file__).resolve().parents[2]


def _cmd(src, out) -> list[str]:
    return [sys.executable, "-m", "ascend", "calibrate", "--src", str(src), "--out", str(out), "--samples", "9", "--max-len", "24", "--no-gate"]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_kill_and_resume_is_byte_identical(tiny_dir, tmp_path):
    src = tiny_dir("deepseek_v3", layers=6)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_cmd(src, whole), env=_env(), check=True, capture_output=True, timeout=600)

    proc = subprocess.Popen(_cmd(src, killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / CALIBRATION_DIR
    deadline = time.time() + 300
    while not (state / "layer-00002.safetensors").exists():
        assert proc.poll() is None and time.time() < deadline, "calibration ended before layer 2 was saved"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (state / "calibration.json").exists()  # killed mid-run
    first = (state / "layer-00000.safetensors").stat()

    resumed = subprocess.run(_cmd(src, killed), env=_env(), capture_output=True, text=True, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr
    again = (state / "layer-00000.safetensors").stat()  # it resumed: layer 0 was not redone
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    for name in ("calibration.safetensors", "calibration.json"):
        assert (state / name).read_bytes() == (whole / CALIBRATION_DIR / name).read_bytes()


def test_other_options_discard_the_state(tiny_dir, small_cfg, tmp_path):
    """A resume only continues the same run: other data or options start over."""
    src = tiny_dir("glm4_moe")
    first = calibrate(src, tmp_path, small_cfg())
    second = calibrate(src, tmp_path, small_cfg(max_len=16))
    assert second["tokens"] < first["tokens"]
    assert load_calibration(tmp_path).info["tokens"] == second["tokens"]


def test_gate_exit_3_names_worst_layers(tiny_dir, tmp_path, cli):
    r = cli("calibrate", "--src", str(tiny_dir("glm4_moe")), "--out", str(tmp_path), "--samples", "9", "--max-len", "24",
            "--max-layer-rel-l2", "1e-9")
    assert r.code == 3, r.err
    line = r.err.strip()
    assert len(line.splitlines()) == 1 and "accuracy gate failed" in line and "worst layers by rel-L2: " in line
    info = json.loads((tmp_path / CALIBRATION_DIR / "calibration.json").read_text())  # the report is kept
    worst = max(info["layers"], key=lambda n: info["layers"][n]["rel_l2"])
    assert f"worst layers by rel-L2: {worst} (" in line


def test_gate_thresholds_each_checked():
    info = {"layers": {"0": {"rel_l2": 0.01}, "1": {"rel_l2": 0.03}}, "logits": {"kl": 0.2, "top1": 0.8, "rel_err": 0.3}}
    check_gate(info, CalibrationThresholds(layer_rel_l2=0.05, logits_kl=0.3, top1=0.7, logits_rel_err=0.4))  # passes
    for field, value, words in [("layer_rel_l2", 0.02, "layer 1 0.03"), ("logits_kl", 0.1, "KL 0.2"),
                                ("top1", 0.9, "top-1 agreement 0.8"), ("logits_rel_err", 0.2, "rel. error 0.3")]:
        th = CalibrationThresholds(**{**dict.fromkeys(CalibrationThresholds.model_fields), field: value})
        with pytest.raises(CheckFailed) as err:
            check_gate(info, th)
        assert words in str(err.value) and err.value.exit_code == 3


def test_npu_without_torch_npu_exit_2(tiny_dir, tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_npu", None)  # import torch_npu -> ImportError
    r = cli("calibrate", "--src", str(tiny_dir("glm4_moe")), "--out", str(tmp_path), "--device", "npu")
    assert r.code == 2 and "torch_npu" in r.err and len(r.err.strip().splitlines()) == 1


def test_load_calibration_refuses_missing_and_foreign(tiny_dir, small_cfg, tmp_path):
    with pytest.raises(ConvertError, match="no complete calibration"):
        load_calibration(tmp_path)
    info = calibrate(tiny_dir("deepseek_v3"), tmp_path, small_cfg())
    cal = load_calibration(tmp_path, source_fingerprint=info["source_fingerprint"], scheme="w8a8")
    lo, hi = cal.input_range("model.layers.0.self_attn.q_a_proj")
    assert lo < 0 < hi
    assert cal.smooth_scale("model.layers.0.self_attn.q_a_proj").shape == (160,)
    assert cal.replaced("model.layers.0.input_layernorm.weight").shape == (160,)
    assert cal.replaced("model.layers.0.self_attn.q_a_proj.input_min") is None
    assert cal.replaced("model.layers.0.mlp.gate.weight") is None
    import pickle

    again = pickle.loads(pickle.dumps(cal))  # for worker processes: reopens its file
    assert torch.equal(again.smooth_scale("model.layers.0.self_attn.q_a_proj"), cal.smooth_scale("model.layers.0.self_attn.q_a_proj"))
    with pytest.raises(ConvertError, match="another source"):
        load_calibration(tmp_path, source_fingerprint="0" * 64)
    with pytest.raises(ConvertError, match="no calibrated input range"):
        cal.input_range("model.layers.0.mlp.down_proj")


def test_logits_report_in_row_chunks_equals_one_shot(tiny_dir):
    from ascend.models.args import load_model_args
    from ascend.quant.calibrate import _logits_report
    from ascend.reference.parallel import Parallel
    from ascend.reference.weights import CheckpointReader

    src = tiny_dir("glm4_moe")
    a = load_model_args(src)
    reader = CheckpointReader(src, a, Parallel().coords)
    g = torch.Generator().manual_seed(0)
    held = torch.randn(300, a.hidden_size, generator=g)
    x = {"held": held, "chain": held + 0.3 * torch.randn(300, a.hidden_size, generator=g)}
    one, chunked = _logits_report(reader, a, x, rows=10**6), _logits_report(reader, a, x, rows=64)
    assert one["tokens"] == chunked["tokens"] == 300 and one["top1"] == chunked["top1"] < 1
    for k in ("kl", "rel_err"):
        assert abs(one[k] - chunked[k]) <= 1e-5 * one[k] and one[k] > 0
