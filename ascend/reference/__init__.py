"""CPU reference models of the supported families and their sharded execution.

- ``ReferenceModel``: one rank's part of a model loaded from an HF or ``sharded`` dir (``model.py``).
- ``compute_logits`` / ``compute_mtp_logits``: one forward, spawning ranks when asked (``runner.py``).
- ``ModelRunner``: the rank-0-driven runtime of the CPU serving engine (contract in ``runner.py``).

Heavy imports (torch) happen on first attribute access so ``import ascend.reference`` stays cheap.
Tiny and scripted checkpoints (test fixtures) are in ``ascend.tiny``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ReferenceModel": "ascend.reference.model",
    "Sequence": "ascend.reference.model",
    "compute_logits": "ascend.reference.runner",
    "compute_mtp_logits": "ascend.reference.runner",
    "ModelRunner": "ascend.reference.runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ascend.reference' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
