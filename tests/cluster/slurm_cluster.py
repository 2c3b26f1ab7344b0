"""A one-node Slurm cluster on 127.0.0.1 for tests: munged, slurmctld and slurmd (Debian's
packages) with a configuration written here, all in a scratch directory, all stopped after."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from tests.serve.engine_fixtures import free_port

DAEMONS = ("munged", "slurmctld", "slurmd")
NODE = "ascendnode"


def missing() -> str | None:
    """Why the live cluster cannot run here, or None."""
    absent = [b for b in (*DAEMONS, "sbatch", "scontrol", "scancel", "squeue") if shutil.which(b) is None]
    if absent:
        return f"Slurm/munge not installed ({', '.join(absent)} missing): apt-get install slurmctld slurmd munge slurm-client"
    if os.geteuid() != 0:
        return "the test Slurm cluster runs its daemons as root"
    return None


def _config(d: Path, sock: Path) -> str:
    cpus = os.cpu_count() or 1
    return f"""\
ClusterName=ascendtest
SlurmctldHost={socket.gethostname().split('.')[0]}(127.0.0.1)
MailProg=/bin/true
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
KillWait=30
InactiveLimit=0
NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={NODE} CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


class Cluster:
    def __init__(self, d: Path):
        self.dir = d
        self.env = {**os.environ, "SLURM_CONF": str(d / "slurm.conf")}
        self.procs: list[subprocess.Popen] = []

    def run(self, *cmd: str, cwd: Path | None = None, timeout: float = 30, env: dict | None = None):
        return subprocess.run(list(cmd), env={**self.env, **(env or {})}, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)

    def sbatch(self, *args: str, cwd: Path, env: dict | None = None) -> str:
        res = self.run("sbatch", "--parsable", *args, cwd=cwd, env=env)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip().split(";")[0]

    def state(self, job: str) -> str:
        """The job's state (squeue while it is known to slurmctld; '' once it is gone)."""
        res = self.run("squeue", "-h", "-j", job, "-o", "%T")
        return res.stdout.strip() if res.returncode == 0 else ""

    def wait_gone(self, job: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.state(job):
                return
            time.sleep(1)
        raise AssertionError(f"job {job} still {self.state(job)} after {timeout} s")

    def log(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.dir.glob("*.log")))


@contextmanager
def slurm_cluster(d: Path):
    """Start munged, slurmctld and slurmd in ``d``; yield a Cluster; stop all three (TERM, then KILL)."""
    d.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool", "munge"):
        (d / sub).mkdir(exist_ok=True)
    os.chmod(d / "munge", 0o700)
    key = d / "munge" / "munge.key"
    key.write_bytes(os.urandom(128))
    os.chmod(key, 0o600)
    sock = d / "munge" / "munge.sock"
    (d / "slurm.conf").write_text(_config(d, sock))
    cluster = Cluster(d)
    try:
        cluster.procs.append(subprocess.Popen(
            ["munged", "-F", "-f", f"--key-file={key}", f"--socket={sock}", f"--pid-file={d}/munge/munged.pid",
             f"--log-file={d}/munged.log", f"--seed-file={d}/munge/seed"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        _wait(lambda: sock.exists(), 10, "munged socket", cluster)
        cluster.procs.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(d / "slurm.conf")], env=cluster.env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        cluster.procs.append(subprocess.Popen(["slurmd", "-D", "-N", NODE, "-f", str(d / "slurm.conf")], env=cluster.env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        _wait(lambda: "idle" in cluster.run("sinfo", "-h", "-o", "%T").stdout, 60, "an idle node", cluster)
        yield cluster
    finally:
        _cancel_all(cluster)
        for p in reversed(cluster.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(cluster.procs):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def _cancel_all(cluster: Cluster, timeout: float = 90) -> None:
    """Cancel the jobs a failed test left behind while slurmd still runs: stopping the daemons
    would leave their slurmstepd and ranks running."""
    if len(cluster.procs) < len(DAEMONS) or any(p.poll() is not None for p in cluster.procs):
        return
    jobs = cluster.run("squeue", "-h", "-o", "%i").stdout.split()
    if jobs:
        cluster.run("scancel", *jobs)
        try:
            for job in jobs:
                cluster.wait_gone(job, timeout)
        except AssertionError:
            pass  # the daemons are stopped all the same


def _wait(ok, timeout: float, what: str, cluster: Cluster) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in cluster.procs:
            if p.poll() is not None:
                raise AssertionError(f"{p.args[0]} exited with {p.returncode}\n{cluster.log()}")
        if ok():
            return
        time.sleep(0.5)
    raise AssertionError(f"no {what} after {timeout} s\n{cluster.log()}")
