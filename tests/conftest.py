"""Shared test helpers."""

from __future__ import annotations

import contextlib
import io
import signal
from dataclasses import dataclass

import pytest

# A suite started in the background (`cmd &` in a script: SIGINT ignored, as POSIX says) would
# hand the ignored SIGINT to every process it starts, and the Ctrl-C tests could not pass.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli():
    """Run the real `ascend` entry point in-process: ``cli("plan", "glm5/a3-w8a8")``."""
    from ascend.cli.main import main

    def run(*args: str) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return CliResult(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """``tiny_dir(family, fp8=False, seed=0, **kw)`` -> path of an ``ascend tiny`` checkpoint (cached)."""
    from ascend.tiny.writer import write_tiny_checkpoint

    cache: dict = {}

    def make(family: str, **kw):
        key = (family, tuple(sorted(kw.items())))
        if key not in cache:
            name = "-".join([family] + [f"{k}{v}" for k, v in sorted(kw.items())])
            cache[key] = write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / name, family, **kw)
        return cache[key]

    return make
