"""Test hook: hold work at a gate, so a test acts while a stage is deterministically in progress
(see convert_gate.py). Python imports this module at start-up when its directory is on
PYTHONPATH; it does nothing unless ASCEND_TEST_CONVERT_GATE is set. ASCEND_TEST_GATE_STAGE picks
what waits: ``convert`` (each converted file, default) or ``verify`` (each reference rank's
forward pass). Forked, spawned and fork-server children inherit it."""

import os

_GATE = os.environ.get("ASCEND_TEST_CONVERT_GATE")
if _GATE:
    import importlib
    import time
    from pathlib import Path

    _MODULE, _NAME = {"convert": ("ascend.convert.execute", "write_file"),
                      "verify": ("ascend.reference.runner", "run_batch")}[os.environ.get("ASCEND_TEST_GATE_STAGE", "convert")]
    _module = importlib.import_module(_MODULE)
    _real = getattr(_module, _NAME)

    def _gated(*args, **kwargs):
        gate = Path(_GATE)
        (gate / f"started-{os.getpid()}").touch()  # one marker per waiting process
        deadline = time.monotonic() + 120  # never hang a test run for good
        while not (gate / "open").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return _real(*args, **kwargs)

    setattr(_module, _NAME, _gated)
