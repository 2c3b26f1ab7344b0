"""Live Slurm: a one-node cluster on 127.0.0.1 (munged, slurmctld, slurmd) runs the tiny CPU
recipe's serve job and conversion array exactly as `ascend ... --emit slurm` writes them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.cluster.slurm_cluster import missing, slurm_cluster
from tests.serve.engine_fixtures import free_port

TOOL_CHECKS = ("tools", "tools_stream", "tools_no_args", "tools_multi_turn")
REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.skipif(missing() is not None, reason=str(missing())), pytest.mark.timeout(900)]


def ascend(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ascend", *args], cwd=cwd, env=job_env(), capture_output=True,
                          text=True, timeout=timeout)


def job_env() -> dict[str, str]:
    """What the jobs inherit (sbatch exports the submitter's environment): this interpreter's
    `ascend` and `ascend-xllm-cpu` on PATH, this checkout's code first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{REPO}:{env.get('PYTHONPATH', '')}".rstrip(":")
    env.pop("ASCEND_DEBUG", None)
    return env


def files(d: Path) -> dict[str, bytes]:
    """Every file's bytes, but for the lock files (they hold the pid of whoever converted)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and not p.name.startswith("lock")}


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd:
                found.append(f"{proc.name}: {cmd}")
    return found


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The tiny source checkpoint and its local conversion (the reference for the array), made in
    ``shared`` and moved to ``local``: the array then converts the very same recipe into ``shared``."""
    d = tmp_path_factory.mktemp("slurm")
    sets = ["--set", f"model.path={d / 'source'}", "--set", f"convert.output={d / 'shared'}"]
    res = ascend("run", "tiny/glm5-cpu", *sets, "--until", "convert", "--run-dir", str(d / "run"), cwd=d, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    (d / "shared").rename(d / "local")
    return d


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with slurm_cluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c


def test_serve_job_smoke_and_scancel(work, cluster):
    port, master = free_port(), free_port()
    sets = ["--set", f"model.path={work / 'source'}", "--set", f"convert.output={work / 'local'}",
            "--set", f"serve.port={port}", "--set", f"serve.master_port={master}"]
    res = ascend("serve", "tiny/glm5-cpu", *sets, "--emit", "slurm", "--out", str(work / "serve.sbatch"), cwd=work)
    assert res.returncode == 0, res.stderr
    job = cluster.sbatch(str(work / "serve.sbatch"), cwd=work, env=job_env())
    out = work / f"ascend-serve-{job}.out"
    try:
        deadline = time.monotonic() + 300
        while "ready:" not in (out.read_text() if out.exists() else ""):
            assert cluster.state(job) in ("PENDING", "RUNNING", "CONFIGURING"), (
                f"job {job} ended: {out.read_text() if out.exists() else ''}\n{cluster.log()}")
            assert time.monotonic() < deadline, f"not ready: {out.read_text() if out.exists() else ''}"
            time.sleep(2)
        url = re.search(r"ready: (\S+)/v1\s+model=(\S+)", out.read_text())
        assert url and url.group(1) == f"http://127.0.0.1:{port}" and url.group(2) == "local"
        with urllib.request.urlopen(f"{url.group(1)}/health", timeout=10) as r:  # an independent look
            assert r.status == 200
        # the recipe's smoke suite against the URL the job printed (checked above). The tool-call
        # checks are left out: with the tiny model's 512-token context their 256-token budget plus
        # the tool prompt overflows (a smoke-suite limit, the same outside Slurm).
        smoke = ascend("smoke", "tiny/glm5-cpu", *sets, *[a for c in TOOL_CHECKS for a in ("--skip", c)],
                       cwd=work, timeout=600)
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        logs = sorted(p.name for p in (work / f"logs/slurm-{job}").iterdir())
        assert logs == ["rank-0.log", "rank-1.log"]  # two ranks, started by the node's launch script
    finally:
        cluster.run("scancel", job)
        cluster.wait_gone(job, 90)
    assert processes_mentioning(str(work / "local")) == []  # no rank outlives the job
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)


def test_conversion_array_matches_local_conversion(work, cluster):
    shared = work / "shared"
    script = ascend("convert", "tiny/glm5-cpu", "--set", f"model.path={work / 'source'}", "--out", str(shared),
                    "--emit", "slurm", "--nnodes", "2", cwd=work)
    assert script.returncode == 0, script.stderr
    sub = subprocess.run(["bash"], input=script.stdout, cwd=work, env={**job_env(), "SLURM_CONF": cluster.env["SLURM_CONF"]},
                         capture_output=True, text=True, timeout=60)
    assert sub.returncode == 0, sub.stderr
    array, final = re.search(r"conversion array: (\d+); finalize: (\d+)", sub.stdout).groups()
    cluster.wait_gone(final, 600)
    outputs = "\n".join(p.read_text() for p in work.glob("ascend-convert-*.out"))
    assert files(shared) == files(work / "local"), outputs
    assert any(name.endswith(".safetensors") for name in files(shared))
    assert sorted(p.name for p in work.glob(f"ascend-convert-{array}_*.out")) == [
        f"ascend-convert-{array}_0.out", f"ascend-convert-{array}_1.out"]  # two parts ran as array tasks


def test_serve_job_reports_ranks_that_die(work, cluster):
    """No model where the recipe says: the ranks exit, the batch step says so and the job ends."""
    (work / "empty").mkdir(exist_ok=True)
    sets = ["--set", f"convert.output={work / 'empty'}", "--set", f"serve.port={free_port()}",
            "--set", f"serve.master_port={free_port()}"]
    res = ascend("serve", "tiny/glm5-cpu", *sets, "--emit", "slurm", "--out", str(work / "dead.sbatch"), cwd=work)
    assert res.returncode == 0, res.stderr
    job = cluster.sbatch(str(work / "dead.sbatch"), cwd=work, env=job_env())
    cluster.wait_gone(job, 180)
    out = (work / f"ascend-serve-{job}.out").read_text()
    assert "error: the ranks exited" in out and "ready:" not in out, out
