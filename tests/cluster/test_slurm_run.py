"""`ascend run --scheduler slurm`: the serve stage submitted to a live one-node Slurm cluster on
127.0.0.1 (tests/cluster/slurm_cluster.py); readiness, smoke, scancel, failures, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster.slurm_cluster import missing, slurm_cluster
from tests.cluster.test_slurm_live import job_env, processes_mentioning
from tests.serve.engine_fixtures import free_port

live = pytest.mark.skipif(missing() is not None, reason=str(missing()))
pytestmark = pytest.mark.timeout(900)


def run(d: Path, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ascend", "run", "tiny/glm5-cpu", *recipe_sets(d), *args],
                          cwd=d, env=env or job_env(), capture_output=True, text=True, timeout=timeout)


def recipe_sets(d: Path) -> list[str]:
    return ["--set", f"model.path={d / 'source'}", "--set", f"convert.output={d / 'out'}",
            "--set", f"serve.port={free_port()}", "--set", f"serve.master_port={free_port()}"]


def report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


def stage(rep: dict, name: str) -> dict:
    return next(s for s in rep["stages"] if s["stage"] == name)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with slurm_cluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c


@pytest.fixture(scope="module")
def chain(tmp_path_factory, cluster):
    """The whole chain, serve submitted to Slurm: plan -> source -> convert -> verify -> serve -> smoke -> stop."""
    d = tmp_path_factory.mktemp("slurmrun")
    # a run dir with a space: the job's output path is quoted in the script's #SBATCH line
    res = run(d, "--until", "smoke", "--scheduler", "slurm", "--run-dir", str(d / "run dir"),
              env={**job_env(), "SLURM_CONF": cluster.env["SLURM_CONF"]})
    return d, res


def slurm_env(cluster, **extra: str) -> dict[str, str]:
    return {**job_env(), "SLURM_CONF": cluster.env["SLURM_CONF"], **extra}


@live
def test_run_serves_on_slurm_smokes_and_cancels(chain, cluster):
    d, res = chain
    assert res.returncode == 0, res.stdout + res.stderr
    rep = report(d / "run dir")
    serve, smoke, stop = stage(rep, "serve"), stage(rep, "smoke"), stage(rep, "stop")
    job = serve["details"]["slurm_job"]
    assert serve["status"] == "ok" and job.isdigit() and f"Slurm job {job}" in serve["summary"]
    assert smoke["status"] == "ok" and smoke["details"]["checks"]
    assert stop["status"] == "ok" and stop["details"]["slurm_job"] == job
    assert f"Slurm job {job}" in (d / "run dir" / "report.txt").read_text()
    # the job Slurm ran is the script `ascend serve --emit slurm` writes, its output in the run dir
    out = Path(serve["details"]["output"]).read_text()
    assert out.count("ready: ") == 1 and serve["details"]["base_url"] in out
    assert (d / "run dir" / "serve.sbatch").read_text().startswith("#!/usr/bin/env bash\n#SBATCH --job-name=ascend-serve-")
    assert sorted(p.name for p in (d / "run dir" / "logs" / f"slurm-{job}").iterdir()) == ["rank-0.log", "rank-1.log"]
    # an independent look: Slurm knows the job as cancelled, squeue lists nothing, no rank is left
    assert "JobState=CANCELLED" in cluster.run("scontrol", "show", "job", job).stdout
    assert cluster.run("squeue", "-h").stdout.strip() == ""
    assert processes_mentioning(str(d / "out")) == []


@live
def test_job_that_dies_before_ready_fails_serve_with_its_output(chain, cluster):
    d, _ = chain
    # every task's `ascend` is /bin/false: the ranks never start, the batch step reports it and exits 3
    res = run(d, "--from", "serve", "--scheduler", "slurm", "--run-dir", str(d / "dead"),
              env=slurm_env(cluster, ASCEND_CLI="false"), timeout=300)
    assert res.returncode == 3, res.stdout + res.stderr
    rep = report(d / "dead")
    serve = stage(rep, "serve")
    assert serve["status"] == "failed" and "before it was ready" in serve["summary"]
    assert any("error: the ranks exited" in line for line in serve["details"]["output_tail"]), serve
    assert "error: the ranks exited" in res.stderr  # the CLI's error line quotes the output's tail
    assert stage(rep, "smoke")["status"] == "blocked"
    assert cluster.run("squeue", "-h").stdout.strip() == ""


@live
def test_refused_submission_is_one_line_exit_2(chain, cluster):
    d, _ = chain
    res = run(d, "--from", "serve", "--scheduler", "slurm", "--sbatch-arg=--partition=nosuchpartition",
              "--run-dir", str(d / "refused"), env=slurm_env(cluster), timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "sbatch refused the serve job" in errors[0], res.stderr
    assert "Invalid partition name specified" in errors[0]  # sbatch's own words


@live
def test_ctrl_c_while_waiting_for_readiness_cancels_the_job(chain, cluster):
    d, _ = chain
    # a node script that never gets ready: the job runs until it is cancelled
    never = d / "never-ready"
    never.write_text("#!/bin/sh\nsleep 600\n")
    never.chmod(0o755)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ascend", "run", "tiny/glm5-cpu", *recipe_sets(d), "--from", "serve",
         "--scheduler", "slurm", "--run-dir", str(d / "int")],
        cwd=d, env=slurm_env(cluster, ASCEND_CLI=str(never)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True)
    try:
        job = wait_for_running_job(cluster, proc)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C on a terminal does
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, out + err
    assert cluster.state(job) == ""  # scancelled before ascend run exited
    assert processes_mentioning(str(never)) == []
    assert stage(report(d / "int"), "serve")["status"] == "interrupted"
    assert json.loads((d / "int" / "stages" / "serve.json").read_text()) == {"slurm_job": job}  # recorded at submission


@live
def test_until_serve_holds_the_job_until_ctrl_c(chain, cluster):
    d, _ = chain
    proc = subprocess.Popen(
        [sys.executable, "-m", "ascend", "run", "tiny/glm5-cpu", *recipe_sets(d), "--from", "serve", "--until", "serve",
         "--scheduler", "slurm", "--run-dir", str(d / "hold")],
        cwd=d, env=slurm_env(cluster), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        lines = []
        while not any(line.startswith("serving at ") for line in lines):
            line = proc.stdout.readline()
            assert line, "".join(lines) + proc.communicate()[1]
            lines.append(line)
        job = stage_line_job(lines)
        time.sleep(3)  # held: the job keeps running
        assert cluster.state(job) == "RUNNING"
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, "".join(lines) + out + err
    assert cluster.state(job) == ""
    rep = report(d / "hold")
    assert stage(rep, "serve")["status"] == "ok" and stage(rep, "stop")["details"]["slurm_job"] == job
    assert processes_mentioning(str(d / "out")) == []


def stage_line_job(lines: list[str]) -> str:
    held = next(line for line in lines if line.startswith("serving at "))
    return held.split("(Slurm job ")[1].split(")")[0]


def wait_for_running_job(cluster, proc: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        jobs = cluster.run("squeue", "-h", "-o", "%i %T").stdout.split()
        if len(jobs) == 2 and jobs[1] == "RUNNING":
            return jobs[0]
        time.sleep(1)
    raise AssertionError(f"no running job after {timeout} s:\n{cluster.log()}")


def test_no_sbatch_is_one_line_exit_2_before_any_stage(tmp_path):
    env = {**job_env(), "PATH": str(Path(sys.executable).parent)}  # the venv's tools, no Slurm
    assert not any((Path(p) / "sbatch").exists() for p in env["PATH"].split(":"))
    res = run(tmp_path, "--scheduler", "slurm", "--run-dir", str(tmp_path / "run"), env=env, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip().splitlines() == [
        "error: --scheduler slurm: sbatch not found on PATH — run where Slurm's client commands work "
        "(a login node), or use --scheduler local"]
    assert not (tmp_path / "source").exists()  # nothing ran: the check comes before the first stage


@pytest.mark.parametrize("arg", ["--output=elsewhere.out", "-o", "--error=x", "--parsable"])
def test_sbatch_args_that_would_hide_the_job_output_are_refused(tmp_path, arg):
    res = run(tmp_path, "--scheduler", "slurm", f"--sbatch-arg={arg}", "--run-dir", str(tmp_path / "run"), timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip().splitlines() == [
        f"error: --sbatch-arg {arg}: ascend run sets this itself (it reads the job's id and output) — drop it "
        "(the job's output goes to RUN_DIR/ascend-serve-<job>.out)"]
