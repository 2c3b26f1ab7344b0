"""`ascend run --scheduler slurm`: the serve stage as a Slurm job.

The job is the sbatch script `ascend serve --emit slurm` prints (written to the run directory
as ``serve.sbatch``), submitted with ``sbatch --parsable`` from the current directory (so the
recipe's relative paths mean what they mean for a local run). Ready means the job printed
``ready: URL/v1  model=ID`` and ``URL/health`` answers 200 from here. :class:`SlurmService` has
the interface the later stages use of :class:`ascend.serve.launch.Service` (``base_url``,
``served_model``, ``stop()``, ``wait()``, a context manager); stopping is ``scancel`` and waiting
until ``squeue`` no longer lists the job.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from ascend.errors import CheckFailed, ServeError
from ascend.fileio import write_atomic
from ascend.serve.launch import health_ok

READY = re.compile(r"^ready: (\S+)/v1\s+model=(\S+)", re.MULTILINE)
ALIVE = {"PENDING", "CONFIGURING", "RUNNING", "SUSPENDED", "REQUEUED", "RESIZING", "SIGNALING", "STAGE_OUT"}
TAIL_LINES = 8
STOP_TIMEOUT_S = 120.0  # the node scripts' 15 s TERM grace + Slurm's KillWait (default 30 s) + margin
OWN_OPTIONS = ("-o", "--output", "-e", "--error", "--parsable")  # the run reads the job's output itself


def require_sbatch() -> str:
    """sbatch's path, or ServeError (exit 2) saying how to get it."""
    found = shutil.which("sbatch")
    if found is None:
        raise ServeError("--scheduler slurm: sbatch not found on PATH",
                         fix="run where Slurm's client commands work (a login node), or use --scheduler local")
    return found


def check_sbatch_args(args: list[str]) -> None:
    for arg in args:
        if any(arg == o or arg.startswith(o + ("=" if o.startswith("--") else "")) for o in OWN_OPTIONS):
            raise ServeError(f"--sbatch-arg {arg}: ascend run sets this itself (it reads the job's id and output)",
                             fix="drop it (the job's output goes to RUN_DIR/ascend-serve-<job>.out)")


class JobFailed(CheckFailed):
    """The job ended (or never got ready); ``tail`` holds the last lines of its output."""

    def __init__(self, what: str, tail: list[str], fix: str):
        self.tail = tail
        shown = " | ".join(line.strip() for line in tail[-3:] if line.strip()) or "(no output)"
        super().__init__(what, why=f"job output ends: {shown}", fix=fix)


class SlurmService:
    """The serve job of a recipe: submitted and ready inside ``with``, cancelled on the way out."""

    def __init__(self, recipe: Any, dep: Any, run_dir: str | Path, *, timeout_s: float,
                 sbatch_args: list[str] | None = None, on_submit: Callable[[str], None] = lambda job: None,
                 poll_s: float = 2.0, stop_timeout_s: float = STOP_TIMEOUT_S):
        from ascend.cluster.slurm import serve_sbatch

        self.run_dir = Path(run_dir).absolute()
        self.log_dir = self.run_dir / "logs"
        self.script = self.run_dir / "serve.sbatch"
        self.output_pattern = str(self.run_dir / "ascend-serve-%j.out")
        self.text = serve_sbatch(recipe, dep, output=self.output_pattern, log_dir=str(self.log_dir))
        self.sbatch_args = list(sbatch_args or [])
        check_sbatch_args(self.sbatch_args)
        self.timeout_s, self.poll_s, self.stop_timeout_s = timeout_s, poll_s, stop_timeout_s
        self.on_submit = on_submit
        self.job_id: str | None = None
        self.base_url: str | None = None
        self.served_model: str = dep.served_model
        self.state = ""  # the latest squeue state
        self._stopped: dict[str, str] | None = None

    @property
    def output(self) -> Path:
        return Path(self.output_pattern.replace("%j", self.job_id or "JOB"))

    # -- submission and readiness ------------------------------------------------------------
    def start(self) -> None:
        sbatch = require_sbatch()
        write_atomic(self.script, self.text)
        # --output again on the command line: it wins over an SBATCH_OUTPUT in the environment.
        cmd = [sbatch, "--parsable", f"--output={self.output_pattern}", *self.sbatch_args, str(self.script)]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ServeError("sbatch did not answer within 120 s", fix="check the Slurm controller (`sinfo`)") from None
        if res.returncode != 0 or not res.stdout.strip():
            said = "; ".join(line.strip() for line in res.stderr.splitlines() if line.strip())[-300:]
            raise ServeError(f"sbatch refused the serve job (exit {res.returncode})", why=said or "no message",
                             fix=f"fix the submission (sbatch arguments, SBATCH_* environment), or try `sbatch {self.script}`")
        self.job_id = res.stdout.strip().split(";")[0]  # "<id>[;<cluster>]"
        self.on_submit(self.job_id)

    def wait_ready(self, stop_requested: Callable[[], bool] = lambda: False) -> bool:
        """True once ready; False if ``stop_requested()`` turned true first; JobFailed (exit 3)
        if the job ends first or is not ready in time (the job itself gives up after the
        recipe's startup timeout; this side allows a minute more for the queue and its message)."""
        deadline = time.monotonic() + self.timeout_s + 60
        while True:
            found = READY.search(self._read_output())
            if self._poll_ended():
                self._fail_ended("before it was ready")
            if found and health_ok(found.group(1)):
                self.base_url, self.served_model = found.group(1), found.group(2)
                return True
            if stop_requested():
                return False
            if time.monotonic() > deadline:
                self.stop()
                where = (f"it printed {found.group(1)}/v1 but /health does not answer from this machine"
                         if found else f"Slurm state {self.state}")
                raise JobFailed(f"Slurm job {self.job_id} was not ready after {self.timeout_s + 60:.0f} s ({where})",
                                self.tail(), fix=f"raise serve.startup_timeout_s if loading (or the queue) is just slow; "
                                f"see {self.output} and the rank logs in {self.log_dir}/slurm-{self.job_id}")
            time.sleep(self.poll_s)

    def wait(self, stop_requested: Callable[[], bool] = lambda: False) -> None:
        """Block until the job ends (JobFailed) or ``stop_requested()`` turns true (then stop)."""
        last = 0.0
        while not stop_requested():
            if time.monotonic() - last >= self.poll_s:
                last = time.monotonic()
                if self._poll_ended():
                    self._fail_ended("while serving")
            time.sleep(0.2)
        self.stop()

    def _poll_ended(self) -> bool:
        """Ask squeue; True once the job is gone or ending (an unanswered query is not an end)."""
        state = self._squeue()
        if state is None:
            return False
        self.state = state or "gone"
        return state not in ALIVE

    def _fail_ended(self, when: str) -> None:
        final = self.final_state() or self.state or "gone"
        raise JobFailed(f"Slurm job {self.job_id} ended ({final}) {when}", self.tail(),
                        fix=f"see {self.output} and the rank logs in {self.log_dir}/slurm-{self.job_id}")

    def _read_output(self) -> str:
        try:
            return self.output.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = TAIL_LINES) -> list[str]:
        return self._read_output().splitlines()[-lines:]

    def progress(self) -> str:
        """For the heartbeat: the job, its state and its output's last line."""
        if self.job_id is None:
            return "submitting"
        last = next((line for line in reversed(self.tail(3)) if line.strip()), "")
        return f"Slurm job {self.job_id} {self.state or 'submitted'}" + (f"; {last[-120:]}" if last else "")

    # -- Slurm queries -------------------------------------------------------------------------
    def _squeue(self) -> str | None:
        """The job's state while squeue lists it, '' once it does not, None if squeue failed."""
        res = _slurm("squeue", "-h", "-j", self.job_id, "-o", "%T")
        if res is None:
            return None
        if res.returncode == 0:
            return res.stdout.strip()
        return "" if "invalid job id" in res.stderr.lower() else None  # purged, or the controller is away

    def final_state(self) -> str:
        """``JobState ExitCode`` from `scontrol show job` (known until Slurm's MinJobAge), or ''."""
        res = _slurm("scontrol", "show", "job", self.job_id)
        fields = dict(f.split("=", 1) for f in (res.stdout if res else "").split() if "=" in f)
        return f"{fields['JobState']}, exit code {fields.get('ExitCode', '?')}" if "JobState" in fields else ""

    # -- stop ------------------------------------------------------------------------------------
    def stop(self) -> dict[str, str]:
        """``scancel`` the job and wait (bounded) until squeue no longer lists it; a job that does
        not go gets SIGKILL. Returns ``{job id: final state}`` (``still listed: STATE`` if it stayed)."""
        if self.job_id is None:
            return {}
        if self._stopped is not None:
            return self._stopped
        _slurm("scancel", self.job_id)
        if not self._gone(self.stop_timeout_s):
            _slurm("scancel", "--signal=KILL", "--full", self.job_id)
        gone = self._gone(30)
        # never raises: this runs on the way out of every run, before the report is written
        self._stopped = {self.job_id: (self.final_state() or "gone") if gone else f"still listed: {self.state}"}
        return self._stopped

    def _gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self._poll_ended() and self.state == "gone":
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(1.0)

    def __enter__(self) -> "SlurmService":
        try:
            self.start()
            self.wait_ready()
        except BaseException:  # Ctrl-C included: a job submitted here never outlives the run
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _slurm(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess | None:
    """Run a Slurm client command; None if it is missing or hangs (the caller decides what that means)."""
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
