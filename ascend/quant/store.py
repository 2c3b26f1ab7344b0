"""A calibration on disk, in a convert output: ``OUT/.ascend-convert/calibration/`` with
``calibration.safetensors``, ``calibration.json`` (written last) and ``gate.json`` (the last gate
check). The interface the W8A8 writer and ``verify`` read (docs/conversion.md, Calibration)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from ascend.checkpoint.files import STATE_DIR
from ascend.errors import CheckFailed, ConvertError

CALIBRATION_DIR = f"{STATE_DIR}/calibration"  # under the convert output dir
GATE = "gate.json"  # the last gate check: thresholds and verdict (outside the fingerprinted files)
FORMAT = "ascend-calibration/1"


def finished(out: str | Path) -> dict | None:
    """calibration.json of the finished calibration in the convert output ``out``, if any."""
    meta = Path(out) / CALIBRATION_DIR / "calibration.json"
    return json.loads(meta.read_text()) if meta.is_file() else None


class Calibration:
    """A finished calibration. ``replaced(name)`` is the final float tensor for every tensor the
    smoothing changed (norm weights / biases, float consumers, v rows, a static linear's bias or
    a weight changed beyond column scaling): write it instead of the source's. A static linear
    with ``smooth_scale(module)`` and no replaced weight is the source's weight with its input
    columns multiplied by that scale.
    Tensors are read on demand (the smoothed tensors of a whole model are tens of GB); the
    object pickles (for worker processes) without its open file."""

    def __init__(self, path: Path, info: dict, thresholds: dict | None = None):
        self.path, self.info = path, info
        self.thresholds = thresholds  # the accuracy gate it passed (None: never checked, e.g. made elsewhere)
        self._handle = None
        self.names = set(self._file().keys())

    def _file(self):
        if self._handle is None:
            self._handle = safe_open(str(self.path / "calibration.safetensors"), "pt")
        return self._handle

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None}

    def _get(self, name: str) -> torch.Tensor | None:
        return self._file().get_tensor(name) if name in self.names else None

    def input_range(self, module: str) -> tuple[float, float]:
        lo, hi = self._get(f"{module}.input_min"), self._get(f"{module}.input_max")
        if lo is None or hi is None:
            raise ConvertError(f"{self.path}: no calibrated input range for {module}",
                               fix="rerun calibration with the scheme being written (ascend calibrate)")
        return float(lo[0]), float(hi[0])

    def smooth_scale(self, module: str) -> torch.Tensor | None:
        return self._get(f"{module}.smooth_scale")

    def replaced(self, tensor_name: str) -> torch.Tensor | None:
        return None if tensor_name.endswith((".input_min", ".input_max", ".smooth_scale")) else self._get(tensor_name)


def load_calibration(out_dir: str | Path, *, source_fingerprint: str | None = None, scheme: str | None = None) -> Calibration:
    """The calibration in ``out_dir``; ``ConvertError`` (exit 2) when missing, incomplete, or made
    for another source / scheme."""
    path = Path(out_dir) / CALIBRATION_DIR
    meta = path / "calibration.json"
    fix = "run the calibration first (ascend calibrate --src SRC --out OUT)"
    if not meta.is_file():
        raise ConvertError(f"{path}: no complete calibration (calibration.json missing)", fix=fix)
    info = json.loads(meta.read_text())
    if info.get("format") != FORMAT:
        raise ConvertError(f"{meta}: format {info.get('format')!r}, expected {FORMAT!r}", fix=fix)
    if source_fingerprint and info.get("source_fingerprint") != source_fingerprint:
        raise ConvertError(f"{meta}: made for another source checkpoint (fingerprint differs)", fix=fix)
    if scheme and info.get("scheme") != scheme:
        raise ConvertError(f"{meta}: made for scheme {info.get('scheme')!r}, not {scheme!r}", fix=fix)
    gate = json.loads((path / GATE).read_text()) if (path / GATE).is_file() else None
    if gate is not None and not gate["passed"]:
        raise CheckFailed(f"{path}: this calibration failed its accuracy gate", why=gate.get("error"),
                          fix="calibrate again with other settings or relaxed thresholds (convert.calibration, or ascend calibrate)")
    return Calibration(path, info, gate["thresholds"] if gate else None)
