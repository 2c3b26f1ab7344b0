"""FIXTURE, not calibration: writes a calibration directory in the interface format of
notes/w8a8-interface.md (``calibration.safetensors`` + ``calibration.json``) from GIVEN min/max
values, so the W8A8 writer and runtime can be tested without the calibration runner.

``install(monkeypatch)`` makes ``ascend.quant.calibrate`` importable with a minimal loader of that
format when the real module (the ``calib`` helper's runner) is not in this tree; when it is,
the real ``load_calibration`` reads these fixture files (a cross-check of the format).
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ascend.errors import ConvertError

CALIBRATION_DIR = ".ascend-convert/calibration"
RANGE_SUFFIXES = (".input_min", ".input_max", ".smooth_scale")


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


class _Calibration:
    def __init__(self, d: Path):
        self.tensors = load_file(str(d / "calibration.safetensors"))

    def input_range(self, module: str) -> tuple[float, float]:
        try:
            return float(self.tensors[module + ".input_min"]), float(self.tensors[module + ".input_max"])
        except KeyError:
            raise ConvertError(f"calibration has no input range for {module}") from None

    def smooth_scale(self, module: str):
        return self.tensors.get(module + ".smooth_scale")

    def replaced(self, name: str):
        return None if name.endswith(RANGE_SUFFIXES) else self.tensors.get(name)


def _load_calibration(out_dir) -> _Calibration:
    d = Path(out_dir) / CALIBRATION_DIR
    if not (d / "calibration.json").is_file():
        raise ConvertError(f"{d}: no calibration", fix="run the calibration first")
    return _Calibration(d)


def install(monkeypatch) -> None:
    try:
        importlib.import_module("ascend.quant.calibrate")
        return  # the real runner is here: it reads the fixture files
    except ImportError:
        pass
    pkg = types.ModuleType("ascend.quant")
    mod = types.ModuleType("ascend.quant.calibrate")
    mod.CALIBRATION_DIR = CALIBRATION_DIR
    mod.load_calibration = _load_calibration
    pkg.calibrate = mod
    monkeypatch.setitem(sys.modules, "ascend.quant", pkg)
    monkeypatch.setitem(sys.modules, "ascend.quant.calibrate", mod)


def fixed_ranges(modules: list[str], lo: float = -4.0, hi: float = 6.0) -> dict[str, tuple[float, float]]:
    """The same made-up range for every module, shifted per module so offsets differ."""
    return {m: (lo - 0.25 * (i % 4), hi + 0.5 * (i % 3)) for i, m in enumerate(modules)}
