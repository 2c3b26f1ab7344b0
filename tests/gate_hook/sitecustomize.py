"""Test hook: hold every converted file at a gate, so a test acts while a conversion is
deterministically in progress (see convert_gate.py). Python imports this module at start-up when its
directory is on PYTHONPATH; it does nothing unless ASCEND_TEST_CONVERT_GATE is set. Forked and
spawned conversion workers inherit it."""

import os

_GATE = os.environ.get("ASCEND_TEST_CONVERT_GATE")
if _GATE:
    import time
    from pathlib import Path

    import ascend.convert.execute as _execute

    _real_write_file = _execute.write_file

    def _gated_write_file(*args, **kwargs):
        gate = Path(_GATE)
        (gate / f"started-{os.getpid()}").touch()  # one marker per writing process
        deadline = time.monotonic() + 120  # never hang a test run for good
        while not (gate / "open").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return _real_write_file(*args, **kwargs)

    _execute.write_file = _gated_write_file
