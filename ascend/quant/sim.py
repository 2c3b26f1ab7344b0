"""Static W8A8 simulation and input capture on the reference runtime's unchanged layer code.

The layer blocks compute ``x @ w.T`` or ``F.linear(x, w, b)`` with plain weight tensors. A static
linear's weight is handed to them as a ``Probe``: a tensor subclass whose matmuls first pass their
input ``x`` through ``hook(module, x)``. Calibration hooks record per-channel min/max; simulation
hooks quantize the input with the static per-tensor range (quantization.md §1). Nothing in
``ascend.reference`` is patched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = torch.finfo(torch.float32).eps
_T_GET = torch.Tensor.T.__get__
_MATMULS = (torch.Tensor.__matmul__, torch.Tensor.matmul, torch.matmul, F.linear)


class Probe(torch.Tensor):
    """A static linear's weight; ``module`` names the linear, ``hook(module, x) -> x'``."""

    @staticmethod
    def __new__(cls, data: torch.Tensor, module: str, hook):
        t = torch.Tensor._make_subclass(cls, data)
        t.module, t.hook = module, hook
        return t

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        probe = next((a for a in (*args, *kwargs.values()) if isinstance(a, Probe)), None)
        if probe is not None and func in _MATMULS and args and not isinstance(args[0], Probe):
            args = (probe.hook(probe.module, args[0]), *args[1:])
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        if probe is not None and func == _T_GET:  # ``w.T`` stays a probe so ``x @ w.T`` is seen
            return Probe(out, probe.module, probe.hook)
        return out


class Recorder:
    """Hook recording per-channel min / max of every input it sees (while ``on``)."""

    def __init__(self):
        self.on = True
        self.min: dict[str, torch.Tensor] = {}
        self.max: dict[str, torch.Tensor] = {}

    def __call__(self, module: str, x: torch.Tensor) -> torch.Tensor:
        if self.on and x.numel():
            rows = x.reshape(-1, x.shape[-1])
            lo, hi = rows.amin(0), rows.amax(0)
            if module in self.min:
                lo, hi = torch.minimum(lo, self.min[module]), torch.maximum(hi, self.max[module])
            self.min[module], self.max[module] = lo, hi
        return x


class ActQuant:
    """Hook quantizing inputs per tensor, asymmetric, with ``ranges[module] = (min, max)``."""

    def __init__(self, ranges: dict[str, tuple[float, float]]):
        self.ranges = ranges

    def __call__(self, module: str, x: torch.Tensor) -> torch.Tensor:
        return fake_quant_act(x, *self.ranges[module])


def act_qparams(lo: float, hi: float) -> tuple[float, float]:
    """(input_scale, input_offset) from a calibrated range (min ≤ 0 ≤ max), quantization.md §1."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = max(hi / 255 - lo / 255, float(EPS))
    return scale, float(round(-lo / scale) - 128)


def fake_quant_act(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``x`` quantized to int8 with the static range and dequantized again."""
    scale, offset = act_qparams(lo, hi)
    q = torch.clamp(torch.round(x / scale + offset), -128, 127)
    return (q - offset) * scale


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 (``scale = rowmax|w| / 127``, floored at eps), dequantized."""
    scale = (w.abs().amax(dim=1, keepdim=True) / 127).clamp_min(float(EPS))
    return torch.clamp(torch.round(w / scale), -128, 127) * scale
