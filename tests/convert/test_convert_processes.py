"""Several `ascend convert` processes and one output directory; workers of a killed parent.

The conversions run as real subprocesses, held mid-write at a gate (tests/gate_hook), so "while
the first one is writing" is deterministic, not a matter of timing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ascend.checkpoint.files import MANIFEST

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gate_hook"))
from convert_gate import Gate, alive, wait_dead  # noqa: E402

pytestmark = pytest.mark.slow


def convert_cmd(src: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ascend", "convert", "--src", str(src), "--out", str(out), "--file-gb", "0.0002",
            *extra]


def run(cmd: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**(env or os.environ)}
    env.pop("ASCEND_TEST_CONVERT_GATE", None)  # only the first writer is held at the gate
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def finish(proc: subprocess.Popen, gate: Gate) -> tuple[int, str]:
    gate.open()
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def test_second_writer_is_refused_while_the_first_writes(ckpt_factory, tmp_path):
    src = ckpt_factory("glm4_moe", fp8=True)
    out = tmp_path / "out"
    gate = Gate(tmp_path / "gate")
    first = subprocess.Popen(convert_cmd(src, out, "--precision", "bf16"), env=gate.env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        gate.wait_started(1, first)
        # Another precision (the mixed-output case) and the very same command (the racing case).
        for precision in ("fp8", "bf16"):
            second = run(convert_cmd(src, out, "--precision", precision), gate.env())
            assert second.returncode == 2, second.stderr
            lines = second.stderr.strip().splitlines()
            assert lines == [f"error: another ascend convert (pid {first.pid}) is writing here: {out} — wait for it "
                             "to finish or stop it, or choose another directory"]
        code, err = finish(first, gate)
    finally:
        first.kill()
        first.wait()
    assert code == 0, err
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["options"]["precision"]["default"] == "bf16"
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert not list(out.rglob("*.partial"))


def test_parts_of_a_multi_node_conversion_write_side_by_side(ckpt_factory, tmp_path):
    """--node-rank/--nnodes parts share the directory; a rerun of a part that is running, or a
    single-node run, is refused; the last part to finish writes the manifest."""
    src = ckpt_factory("glm4_moe", fp8=True)
    out = tmp_path / "out"
    gate = Gate(tmp_path / "gate")
    parts = [subprocess.Popen(convert_cmd(src, out, "--precision", "bf16", "--nnodes", "2", "--node-rank", str(r)),
                              env=gate.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    try:
        gate.wait_started(2)  # both parts are writing at once
        again = run(convert_cmd(src, out, "--precision", "bf16", "--nnodes", "2", "--node-rank", "1"))
        assert again.returncode == 2 and f"another ascend convert --node-rank 1 (pid {parts[1].pid})" in again.stderr
        whole = run(convert_cmd(src, out, "--precision", "bf16"))
        assert whole.returncode == 2 and "another ascend convert (pid " in whole.stderr, whole.stderr
        results = [finish(p, gate) for p in parts]
    finally:
        for p in parts:
            p.kill()
            p.wait()
    assert [code for code, _ in results] == [0, 0], results
    assert (out / MANIFEST).is_file()
    reference = tmp_path / "single"
    assert run(convert_cmd(src, reference, "--precision", "bf16")).returncode == 0
    for name in json.loads((reference / MANIFEST).read_text())["files"]:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_workers_die_with_a_killed_parent(ckpt_factory, tmp_path):
    src = ckpt_factory("glm4_moe", fp8=True)
    out = tmp_path / "out"
    gate = Gate(tmp_path / "gate")
    parent = subprocess.Popen(convert_cmd(src, out, "--precision", "bf16", "--workers", "2"), env=gate.env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        workers = gate.wait_started(2, parent)
        assert parent.pid not in workers and all(alive(w) for w in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        survivors = wait_dead(workers, timeout=20)
        gate.open()  # a surviving worker would now go on writing into --out
        assert survivors == [], f"workers {survivors} outlived their parent"
    finally:
        gate.open()
        parent.kill()
        parent.wait()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    rerun = run(convert_cmd(src, out, "--precision", "bf16"))  # the lock died with its holder
    assert rerun.returncode == 0, rerun.stderr
    assert (out / MANIFEST).is_file() and not list(out.rglob("*.partial"))
