"""`--emit FORM [--out FILE]` of `ascend serve` and `ascend convert`: pick the job file, write it."""

from __future__ import annotations

import sys
from pathlib import Path

from ascend.errors import ConvertError, ServeError
from ascend.recipe.schema import Recipe

SERVE_FORMS = ("script", "slurm", "kubernetes")
CONVERT_FORMS = ("slurm", "kubernetes")


def emit_serve(recipe: Recipe, dep, form: str, *, node: int | None, out: str | None,
               device_ips_from: str | None = None) -> None:
    if form not in SERVE_FORMS:
        raise ServeError(f"--emit {form}: unknown form", fix=f"use one of {', '.join(SERVE_FORMS)}")
    if form == "script":
        if node is None and len(dep.hosts) > 1:
            raise ServeError("--emit script needs --node N on a multi-node recipe", fix="pass --node N")
        node = node or 0
        if not 0 <= node < len(dep.hosts):
            raise ServeError(f"--node {node} is outside 0..{len(dep.hosts) - 1}", fix="pass an index into hardware.hosts")
        text = dep.scripts[str(node)]
    elif form == "slurm":
        from ascend.cluster.slurm import serve_sbatch

        text = serve_sbatch(recipe, dep, device_ips_from=_absolute(device_ips_from))
    else:
        from ascend.cluster.kubernetes import serve_manifests

        text = serve_manifests(recipe, dep)
    _write(text, out)


def emit_convert(recipe: Recipe, form: str, *, parts: int, out: str | None = None) -> None:
    if form not in CONVERT_FORMS:
        raise ConvertError(f"--emit {form}: unknown form", fix=f"use one of {', '.join(CONVERT_FORMS)}")
    if form == "slurm":
        from ascend.cluster.slurm import convert_submit

        text = convert_submit(recipe, parts)
    else:
        from ascend.cluster.kubernetes import convert_manifests

        text = convert_manifests(recipe, parts)
    _write(text, out)


def _absolute(path: str | None) -> str | None:
    return str(Path(path).absolute()) if path else None


def _write(text: str, out: str | None) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    from ascend.fileio import write_atomic
    from ascend.paths import writable_file

    writable_file(out, "--out")
    write_atomic(out, text)
    print(f"wrote {out}", file=sys.stderr)
