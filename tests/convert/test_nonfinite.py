"""NaN and Inf: convert refuses to write them (exit 2, naming the source tensor), verify fails on
them (exit 3), and verify checks that config.json describes the weights."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_convert_cli import assert_nothing_done, assert_one_line_error, cli

import ascend.convert.execute as execute
from ascend.checkpoint.files import MANIFEST
from ascend.convert.execute import all_finite

WEIGHT = "model.layers.1.mlp.experts.3.up_proj.weight"  # block-FP8 in the source
SCALE = WEIGHT + "_scale_inv"


@pytest.fixture
def src(ckpt_factory, tmp_path):
    d = tmp_path / "src"
    shutil.copytree(ckpt_factory("deepseek_v3", fp8=True), d)
    return d


def poke(src, name, edit) -> None:
    """Rewrite one source tensor in place: ``edit(tensor)`` mutates it."""
    index = json.loads((src / "model.safetensors.index.json").read_text())
    shard = src / index["weight_map"][name]
    tensors = load_file(str(shard))
    edit(tensors[name])
    save_file(tensors, str(shard), metadata={"format": "pt"})


def nan_code(t):
    t.view(torch.uint8)[5, 7] = 0x7F  # e4m3fn NaN


def set_scale(value):
    def edit(t):
        t[0, 0] = value
    return edit


@pytest.mark.parametrize("precision", ["bf16", "fp8", "w8a8"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_scale_is_refused(src, tmp_path, capsys, precision, value):
    poke(src, SCALE, set_scale(value))
    scheme = ["--w8a8-scheme", "dynamic"] if precision == "w8a8" else []  # the writer's check, not calibration's
    code, _, err = cli(capsys, "convert", "--src", src, "--out", tmp_path / "o", "--precision", precision, *scheme)
    assert_one_line_error(code, err, f"source tensor {SCALE} holds NaN or Inf")
    assert_nothing_done(tmp_path / "o")


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
def test_nan_fp8_code_is_refused(src, tmp_path, capsys, precision):
    poke(src, WEIGHT, nan_code)
    code, _, err = cli(capsys, "convert", "--src", src, "--out", tmp_path / "o", "--precision", precision)
    assert_one_line_error(code, err, f"source tensor {WEIGHT} holds NaN or Inf")


def test_nan_in_a_bf16_source_is_refused(ckpt_factory, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(ckpt_factory("glm4_moe"), src)
    name = "model.layers.0.self_attn.o_proj.weight"
    poke(src, name, lambda t: t.__setitem__((3, 4), float("-inf")))
    code, _, err = cli(capsys, "convert", "--src", src, "--out", tmp_path / "o", "--precision", "w8a8",
                       "--w8a8-scheme", "dynamic")
    assert_one_line_error(code, err, f"source tensor {name} holds NaN or Inf")


def test_verify_fails_on_nan_weights_and_logits(src, tmp_path, capsys, monkeypatch):
    """The issue's case: a NaN scale converted (here: with convert's check switched off) gave
    "max error nan ... OK, top-1 100%"; verify must fail, exit 3."""
    poke(src, SCALE, set_scale(float("nan")))
    out = tmp_path / "o"
    with monkeypatch.context() as m:
        m.setattr(execute, "all_finite", lambda t: True)
        code, _, err = cli(capsys, "convert", "--src", src, "--out", out, "--precision", "bf16")
        assert code == 0, err
    code, stdout, err = cli(capsys, "verify", out)
    assert code == 3, stdout + err
    assert f"FAIL {WEIGHT}" in stdout and "NaN or Inf" in stdout
    assert "  OK" not in stdout


def test_verify_fails_on_a_nan_output_scale(ckpt_factory, tmp_path, capsys):
    from ascend.checkpoint.safetensors_io import read_header

    out = tmp_path / "o"
    code, _, err = cli(capsys, "convert", "--src", ckpt_factory("deepseek_v3", fp8=True), "--out", out,
                       "--precision", "fp8", "--layout", "sharded", "--tp", "2", "--ep", "2",
                       "--requantize-misaligned")
    assert code == 0, err
    f = out / "model-rank-00000-of-00002.safetensors"
    info = read_header(f)[0][SCALE]
    data = bytearray(f.read_bytes())
    data[info.start:info.start + 4] = torch.tensor([float("inf")]).numpy().tobytes()
    f.write_bytes(bytes(data))
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["files"][f.name]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()  # hide it from the checksum
    (out / MANIFEST).write_text(json.dumps(manifest))
    code, stdout, _ = cli(capsys, "verify", out, "--no-logits")
    assert code == 3 and f"FAIL {WEIGHT}" in stdout and "NaN or Inf" in stdout


def test_nan_logits_fail_verify(monkeypatch):
    """The logits comparison itself: NaN compares False with every bound, so it must be named."""
    import ascend.reference
    from ascend.convert.verify import VerifyReport, _check_logits

    class Jobs:
        config = {"vocab_size": 8}
        files = []

    def logits(path, ids):
        t = torch.zeros(len(ids), 8)
        t[:, 1] = 1.0
        if path == "out":
            t[:] = float("nan")
        return t

    monkeypatch.setattr(ascend.reference, "compute_logits", logits)
    report = VerifyReport("out")
    _check_logits("out", Jobs(), "src", 1000, report)
    assert any("output's logits hold NaN or Inf" in p for p in report.problems)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float8_e4m3fn])
def test_all_finite_agrees_with_isfinite(dtype):
    g = torch.Generator().manual_seed(0)
    base = (torch.randn(37, 131, generator=g) * 10).to(dtype)
    assert all_finite(base) and all_finite(base[:, 3:40]) and all_finite(torch.zeros(0, 5, dtype=dtype))
    values = [float("nan"), float("inf"), float("-inf")] if dtype != torch.float8_e4m3fn else [float("nan"), -float("nan")]
    for value in values:
        for pos in [(0, 0), (18, 65), (36, 130)]:
            t = base.clone()
            if dtype == torch.float8_e4m3fn:
                t.view(torch.uint8)[pos] = 0xFF if str(value).startswith("-") else 0x7F
            else:
                t[pos] = value
            assert not all_finite(t) and not bool(torch.isfinite(t.float()).all())
    assert all_finite(torch.tensor([127, -128], dtype=torch.int8))


# ---- config.json agrees with the weights --------------------------------------------------


def convert_ok(capsys, src, out, *flags):
    code, _, err = cli(capsys, "convert", "--src", src, "--out", out, *flags)
    assert code == 0, err
    return out


def test_config_must_equal_the_prescribed_one(ckpt_factory, tmp_path, capsys):
    out = convert_ok(capsys, ckpt_factory("deepseek_v3", fp8=True), tmp_path / "o", "--precision", "fp8")
    cfg = json.loads((out / "config.json").read_text())
    del cfg["quantization_config"]
    data = json.dumps(cfg).encode()
    (out / "config.json").write_bytes(data)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["files"]["config.json"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (out / MANIFEST).write_text(json.dumps(manifest))
    code, stdout, _ = cli(capsys, "verify", out, "--no-logits")
    assert code == 3
    assert "config.json: differs from the one the conversion prescribes in quantization_config" in stdout
    assert "block-FP8" in stdout  # and the independent check names what is wrong


@pytest.mark.parametrize("precision, wrong", [
    ("bf16", {"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}),
    ("fp8", {"quantization_config": None}),
    ("w8a8", {"quantize": None}),
    ("bf16", {"quantize": "w8a8_dynamic"}),
    ("bf16", {"num_nextn_predict_layers": 0}),
    ("bf16", {"dtype": "float32"}),
])
def test_config_must_describe_the_weights(ckpt_factory, tmp_path, capsys, monkeypatch, precision, wrong):
    """Even when the conversion itself prescribes a wrong config.json (a bug): the config is
    checked against the tensors written, not only against the jobs."""
    import ascend.convert.jobs as jobs

    real = jobs._output_config

    def buggy(*a, **kw):
        cfg = real(*a, **kw)
        for k, v in wrong.items():
            cfg.pop(k, None) if v is None else cfg.__setitem__(k, v)
        return cfg

    monkeypatch.setattr(jobs, "_output_config", buggy)
    scheme = ["--w8a8-scheme", "dynamic"] if precision == "w8a8" else []  # data-free: no calibration needed
    out = convert_ok(capsys, ckpt_factory("deepseek_v3", fp8=True), tmp_path / "o", "--precision", precision, *scheme)
    code, stdout, _ = cli(capsys, "verify", out, "--no-logits")
    assert code == 3, stdout
    assert "FAIL config.json:" in stdout and "differs from the one" not in stdout


def test_config_of_a_dropped_mtp_layer(ckpt_factory, tmp_path, capsys):
    out = convert_ok(capsys, ckpt_factory("glm4_moe"), tmp_path / "o", "--precision", "bf16", "--mtp", "drop")
    assert json.loads((out / "config.json").read_text())["num_nextn_predict_layers"] == 0
    code, stdout, _ = cli(capsys, "verify", out, "--no-logits")
    assert code == 0, stdout


def test_manifest_options_must_match_the_recorded_jobs(ckpt_factory, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(ckpt_factory("glm4_moe"), src)
    out = convert_ok(capsys, src, tmp_path / "o", "--precision", "bf16")
    shutil.rmtree(src)  # verify falls back to the jobs recorded in the output
    code, stdout, _ = cli(capsys, "verify", out)
    assert code == 0, stdout
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["options"]["precision"]["default"] = "fp8"
    (out / MANIFEST).write_text(json.dumps(manifest))
    code, stdout, _ = cli(capsys, "verify", out)
    assert code == 3 and "manifest's conversion options differ" in stdout
