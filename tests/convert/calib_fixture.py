"""FIXTURE, not calibration: writes a calibration directory in the format of
``ascend.quant.store`` (``calibration.safetensors`` + ``calibration.json``) from GIVEN min/max
values, so the W8A8 writer and runtime can be tested without the calibration runner (the real
``load_calibration`` reads these files: a cross-check of the format).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

CALIBRATION_DIR = ".ascend-convert/calibration"


def write_calibration(out_dir: Path, family: str, ranges: dict[str, tuple[float, float]], *,
                      smooth: dict[str, torch.Tensor] | None = None, replaced: dict[str, torch.Tensor] | None = None,
                      scheme: str = "w8a8", fingerprint: str = "") -> Path:
    d = Path(out_dir) / CALIBRATION_DIR
    d.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for module, (lo, hi) in ranges.items():
        tensors[module + ".input_min"] = torch.tensor([min(lo, 0.0)], dtype=torch.float32)
        tensors[module + ".input_max"] = torch.tensor([max(hi, 0.0)], dtype=torch.float32)
    for module, s in (smooth or {}).items():
        tensors[module + ".smooth_scale"] = s.to(torch.float32).clone()
    for name, t in (replaced or {}).items():
        tensors[name] = t.clone()
    save_file(tensors, str(d / "calibration.safetensors"))
    (d / "calibration.json").write_text(json.dumps({
        "format": "ascend-calibration/1", "scheme": scheme, "family": family, "samples": 0, "tokens": 0,
        "smoothing": {"alpha": 0.5} if smooth else None, "source_fingerprint": fingerprint,
        "layers": {}, "logits": None}))
    return d


def fixed_ranges(modules: list[str], lo: float = -4.0, hi: float = 6.0) -> dict[str, tuple[float, float]]:
    """The same made-up range for every module, shifted per module so offsets differ."""
    return {m: (lo - 0.25 * (i % 4), hi + 0.5 * (i % 3)) for i, m in enumerate(modules)}
