"""Helpers for end-to-end tests: the real `ascend` CLI in a subprocess, in a scratch directory,
on free ports (so parallel test runs and other engineers' servers never collide)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Run:
    code: int
    out: str
    err: str

    def report(self) -> dict:
        return json.loads(self.out)


def ascend(*args: str, cwd: Path, timeout: float = 400) -> Run:
    """Run ``python -m ascend ARGS`` (the installed entry point's code) in ``cwd``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("ASCEND_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "ascend", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def recipe_args(name: str, work: Path) -> list[str]:
    """A built-in tiny recipe with its paths under ``work`` and fresh ports."""
    port = free_port()
    master = free_port()
    while master in (port, port + 1):
        master = free_port()
    return [
        f"tiny/{name}",
        "--set", f"model.path={work / 'source'}",
        "--set", f"convert.output={work / 'converted'}",
        "--set", f"serve.port={port}",
        "--set", f"serve.master_port={master}",
        "--run-dir", str(work / "run"),
    ]


def swap_rank_slices(out_dir: Path, name: str) -> None:
    """A wrong TP split: rank 0 and rank 1 of a 2-rank sharded output hold each other's slice of
    ``name``. The manifest is rewritten to match, as a buggy converter would write it (checksums
    stay consistent)."""
    from safetensors.torch import load_file, save_file

    files = [out_dir / f"model-rank-{r:05d}-of-00002.safetensors" for r in (0, 1)]
    tensors = [load_file(str(f)) for f in files]
    tensors[0][name], tensors[1][name] = tensors[1][name].clone(), tensors[0][name].clone()
    manifest = json.loads((out_dir / "ascend-manifest.json").read_text())
    for f, t in zip(files, tensors):
        save_file(t, str(f), metadata={"format": "pt"})
        manifest["files"][f.name] = {"size": f.stat().st_size, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
    (out_dir / "ascend-manifest.json").write_text(json.dumps(manifest, indent=2))
