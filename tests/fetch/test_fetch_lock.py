"""Two `ascend fetch` processes into one directory: the second is refused while the first downloads."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from fake_modelscope import MODEL_ID

from ascend.cli.main import main

SHARD = "model-00002-of-00003.safetensors"


def test_second_fetch_into_one_directory_exits_2_naming_the_first(hub, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["fetch", MODEL_ID, "--local-dir", str(out), "--endpoint", hub.endpoint]
    hub.faults[SHARD] = ["hold"]  # the first fetch stays in its download of SHARD
    first = subprocess.Popen([sys.executable, "-m", "ascend", *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(r[:2] == ("get", SHARD) for r in hub.requests):
            assert first.poll() is None and time.monotonic() < deadline, first.stderr and first.stderr.read()
            time.sleep(0.05)
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2
        assert err.strip().splitlines() == [f"error: another ascend fetch (pid {first.pid}) is writing here: {out} — "
                                            "wait for it to finish or stop it, or choose another directory"]
    finally:
        hub.release.set()
        _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err
    assert (out / SHARD).read_bytes() == hub.files[SHARD]
