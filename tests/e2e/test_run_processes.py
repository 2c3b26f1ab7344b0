"""`ascend run` as a process: Ctrl-C during convert or verify, two runs of one recipe.

The conversion (or verify's reference ranks) is held at a gate (tests/gate_hook), so the signal or
the second run arrives while the stage is deterministically in progress.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_helpers import recipe_args

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gate_hook"))
from convert_gate import Gate, alive, wait_dead  # noqa: E402

pytestmark = pytest.mark.slow


PROGRESS = re.compile(r"^(source|tiny|convert|verify|serve|fetch): ")  # plain progress lines (piped stderr)


def messages(err: str) -> list[str]:
    """stderr without its progress lines: what remains must be the one interruption line."""
    return [line for line in err.strip().splitlines() if not PROGRESS.match(line)]


def start_run(args: list[str], gate: Gate, cwd: Path) -> subprocess.Popen:
    # Its own process group, as a shell gives a foreground job: Ctrl-C signals the whole group.
    return subprocess.Popen([sys.executable, "-m", "ascend", "run", *args], cwd=cwd, env=gate.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def stop(proc: subprocess.Popen, gate: Gate) -> None:
    gate.open()
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)


def test_ctrl_c_during_convert_exits_130_with_one_line_and_an_interrupted_report(tmp_path):
    args = recipe_args("glm5-cpu", tmp_path) + ["--until", "convert", "--set", "convert.workers=2"]
    gate = Gate(tmp_path / "gate")
    proc = start_run(args, gate, tmp_path)
    workers: list[int] = []
    try:
        workers = gate.wait_started(2, proc)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C on a terminal does
        out, err = proc.communicate(timeout=120)
    finally:
        stop(proc, gate)
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert messages(err) == ["interrupted during convert; rerun to resume"], err
    assert "OK" not in out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["ok"] is False and report["verdict"].startswith("INTERRUPTED during convert")
    assert {s["stage"]: s["status"] for s in report["stages"]}["convert"] == "interrupted"
    assert "INTERRUPTED during convert" in (tmp_path / "run" / "report.txt").read_text()
    assert wait_dead(workers, timeout=10) == []

    env = {k: v for k, v in gate.env().items() if k != "ASCEND_TEST_CONVERT_GATE"}
    again = subprocess.run([sys.executable, "-m", "ascend", "run", *args], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "run" / "report.json").read_text())["ok"] is True


def test_ctrl_c_during_verify_stops_the_reference_ranks_quietly(tmp_path):
    args = recipe_args("glm5-cpu", tmp_path) + ["--until", "verify"]
    gate = Gate(tmp_path / "gate")
    proc = subprocess.Popen([sys.executable, "-m", "ascend", "run", *args], cwd=tmp_path,
                            env=gate.env(ASCEND_TEST_GATE_STAGE="verify"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    ranks: list[int] = []
    try:
        ranks = gate.wait_started(2, proc, timeout=240)  # both reference ranks are in their forward pass
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        stop(proc, gate)
        for pid in ranks:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert messages(err) == ["interrupted during verify; rerun to resume"], err
    assert wait_dead(ranks, timeout=10) == []
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert {s["stage"]: s["status"] for s in report["stages"]}["verify"] == "interrupted" and report["ok"] is False


def test_second_run_of_one_run_dir_is_refused(tmp_path):
    args = recipe_args("glm5-cpu", tmp_path) + ["--until", "convert"]
    gate = Gate(tmp_path / "gate")
    first = start_run(args, gate, tmp_path)
    try:
        gate.wait_started(1, first)
        env = {k: v for k, v in gate.env().items() if k != "ASCEND_TEST_CONVERT_GATE"}
        second = subprocess.run([sys.executable, "-m", "ascend", "run", *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        gate.open()
        first.communicate(timeout=300)
    finally:
        stop(first, gate)
    assert second.returncode == 2, second.stderr
    assert second.stderr.strip().splitlines() == [
        f"error: another ascend run (pid {first.pid}) is writing here: {tmp_path / 'run'} — wait for it to finish "
        "or stop it, or choose another directory"]
    assert first.returncode == 0
