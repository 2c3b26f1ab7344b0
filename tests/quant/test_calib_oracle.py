"""Recorded input ranges vs an independent oracle: transformers 5.23 running the same tiny
checkpoint on the same calibration tokens, with forward pre-hooks on every static linear.

Deeper layers' inputs depend on the hidden states carried from layer to layer (and on the
streamed MoE), so agreement on every layer checks the runner, not just the first matmul."""

from __future__ import annotations

import pytest
import torch

from ascend.models.quant_schemes import static_linears
from ascend.quant import data
from ascend.quant.calibrate import calibrate
from ascend.quant.store import load_calibration


def _oracle_ranges(path, modules: list[str], seqs: list[list[int]]) -> dict[str, tuple[float, float]]:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    seen: dict[str, list[float]] = {}

    def hook(name):
        def pre(_module, args):
            x = args[0]
            lo, hi = seen.get(name, [float("inf"), float("-inf")])
            seen[name] = [min(lo, x.min().item()), max(hi, x.max().item())]
        return pre

    for m in modules:
        model.get_submodule(m).register_forward_pre_hook(hook(m))
    with torch.no_grad():
        for ids in seqs:  # one sequence at a time, each from position 0
            model(torch.tensor([ids]))
    return {m: (min(lo, 0.0), max(hi, 0.0)) for m, (lo, hi) in seen.items()}


@pytest.mark.parametrize("family", ["deepseek_v3", "glm4_moe", "glm_moe_dsa"])
def test_ranges_equal_transformers_hooks(family, tiny_dir, small_cfg, tmp_path):
    path = tiny_dir(family)
    cfg = small_cfg(smoothing_alpha=None)
    calibrate(path, tmp_path, cfg)
    cal = load_calibration(tmp_path)
    seqs = data.tokenize_samples(path, data.builtin_samples(), samples=cfg.samples, max_len=cfg.max_len)
    calib_seqs = [s for i, s in enumerate(seqs) if i % 8 != 7]  # every 8th sample is held out
    assert cal.info["tokens"] == sum(map(len, calib_seqs))
    from ascend.models.args import load_model_args

    modules = static_linears(family, "w8a8", load_model_args(path), mtp=False)  # what calibration covers
    assert len(modules) >= 4 * 3
    want = _oracle_ranges(path, modules, calib_seqs)
    for m in modules:
        got = cal.input_range(m)
        scale = max(abs(want[m][0]), abs(want[m][1]))
        assert got[0] <= 0 <= got[1]
        assert abs(got[0] - want[m][0]) <= 1e-4 * scale and abs(got[1] - want[m][1]) <= 1e-4 * scale, (m, got, want[m])
