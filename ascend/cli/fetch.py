"""`ascend fetch`: download a checkpoint from ModelScope / Hugging Face and prove it is whole."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator, Optional

import typer

from ascend.cli.common import json_option, print_json, set_option
from ascend.errors import CheckFailed, FetchError

MAX_LISTED = 20


def register(app: typer.Typer) -> None:
    @app.command("fetch")
    def fetch_command(
        target: str = typer.Argument(..., metavar="RECIPE|MODEL_ID", help="A recipe (file or built-in name), or a hub model id with --local-dir."),
        source: Optional[str] = typer.Option(None, "--source", help="modelscope (default) or huggingface."),
        revision: Optional[str] = typer.Option(None, "--revision", help="Branch, tag or commit (default: master on ModelScope, main on Hugging Face)."),
        local_dir: Optional[Path] = typer.Option(None, "--local-dir", help="Where the files go (required with a MODEL_ID)."),
        include: list[str] = typer.Option([], "--include", metavar="GLOB", help="Only repository paths matching GLOB (repeatable)."),
        offline: bool = typer.Option(False, "--offline", help="No network: check what is on disk against the pinned listing and safetensors headers."),
        checksum: bool = typer.Option(False, "--checksum", help="Also compare sha256 with the hub listing (reads every file, every time)."),
        endpoint: Optional[str] = typer.Option(None, "--endpoint", help="Hub endpoint URL (mirror); default from MODELSCOPE_ENDPOINT / HF_ENDPOINT."),
        workers: int = typer.Option(4, "--workers", min=1, help="Parallel downloads and hash workers."),
        overrides: list[str] = set_option(),
        as_json: bool = json_option(),
    ) -> None:
        """Download a checkpoint and verify it is complete; rerun to resume.

        Every file named by model.safetensors.index.json (or the msModelSlim index) must be there
        with the size the hub lists, each safetensors file exactly as long as its header says;
        --checksum adds sha256 against the hub listing. The resolved revision and the listing are
        pinned in .ascend-fetch.json next to the files. Exit 3 when files are missing or short.

        Examples:

        \b
          ascend fetch glm5/a3-w8a8                       # model.id / revision / path from the recipe
          ascend fetch ZhipuAI/GLM-5-FP8 --local-dir /data/models/GLM-5-FP8
          ascend fetch ZhipuAI/GLM-5-FP8 --local-dir /data/GLM-5-FP8 --include '*.json' --include '*.safetensors'
          ascend fetch zai-org/GLM-5-FP8 --source huggingface --revision main --local-dir /data/GLM-5-FP8
          ascend fetch ZhipuAI/GLM-5-FP8 --local-dir /data/GLM-5-FP8 --offline --checksum
        """
        from ascend.fetch import fetch, verify_local
        from ascend.fetch.fetch import FetchResult, check_model_id

        model_id, src, rev, directory = _resolve_target(target, source, revision, local_dir, overrides)
        if src != "local":
            check_model_id(model_id)  # before a directory is made for it
        if src != "local" and not offline:
            from ascend.paths import writable_dir

            writable_dir(directory, "--local-dir" if local_dir is not None else "model.path")
        with _progress(directory, bars=not as_json) as progress:
            if src == "local":
                report, record = verify_local(directory, include=include, checksum=checksum, hash_workers=workers, progress=progress)
                result = FetchResult(model_id, "local", str(directory), None, None, True, report)
            else:
                result = fetch(
                    model_id,
                    local_dir=directory,
                    source=src,
                    revision=rev,
                    include=include,
                    offline=offline,
                    checksum=checksum,
                    endpoint=endpoint,
                    max_workers=workers,
                    hash_workers=workers,
                    progress=progress,
                )
        if as_json:
            print_json(result.to_dict())
        else:
            _print_result(result)
        if not result.complete:
            how = "rerun the same command to resume" if not result.offline else "run without --offline to download what is missing"
            raise CheckFailed(
                f"{result.local_dir} is not complete: {result.report.summary()}",
                why=result.download_error,
                fix=how,
            )


def _looks_like_recipe(target: str) -> bool:
    return target.endswith((".yaml", ".yml")) or Path(target).is_file()


def _resolve_target(target, source, revision, local_dir, overrides):
    """(model_id, source, revision, local_dir) from a MODEL_ID + options or from a recipe."""
    if local_dir is not None or source is not None:
        if local_dir is None:
            raise FetchError(f"no --local-dir for {target}", fix=f"ascend fetch {target} --local-dir /data/models/NAME")
        return target, source or "modelscope", revision, local_dir
    try:
        from ascend.recipe import load_recipe
    except ImportError:
        raise FetchError(
            f"cannot read recipe {target!r} (recipe support is not installed yet)",
            fix="give a model id instead: ascend fetch MODEL_ID --local-dir DIR",
        ) from None
    from ascend.errors import RecipeError

    try:
        recipe = load_recipe(target, list(overrides))
    except RecipeError as err:
        if not _looks_like_recipe(target):
            raise FetchError(
                f"{target!r} is neither a recipe nor a model id with --local-dir",
                why=err.line(),
                fix=f"for a hub id: ascend fetch {target} --local-dir DIR [--source modelscope|huggingface]",
            ) from None
        raise
    model = recipe.model
    if model.source == "tiny":
        raise FetchError(
            f"recipe {target} uses a tiny generated checkpoint; there is nothing to download",
            fix=f"generate it with `ascend tiny` (or `ascend run {target}`)",
        )
    if not model.path:
        raise FetchError(f"recipe {target}: model.path is empty", fix="set model.path (--set model.path=/data/models/NAME)")
    if model.source != "local" and not model.id:
        raise FetchError(f"recipe {target}: model.id is empty", fix="set model.id (--set model.id=ORG/NAME)")
    return model.id, source or model.source, revision or model.revision, Path(model.path)


@contextlib.contextmanager
def _progress(directory: Path, bars: bool) -> Iterator:
    """On a terminal: the hubs' download bars and a sha256 bar (the hook yielded), if ``bars``.
    Elsewhere (CI, a pipe): a plain line every few seconds with the bytes on disk so far, and
    no hook (the hubs' bars are off too: they would fill a log with carriage returns)."""
    from ascend.progress import ByteProgress, heartbeat, on_terminal

    if not on_terminal():
        with heartbeat(f"fetch into {directory}", detail=lambda: f"{_bytes_under(directory) / 1e9:.2f} GB on disk"):
            yield None
        return
    if not bars:
        yield None
        return
    bar: ByteProgress | None = None

    def hook(kind: str, n: int) -> None:
        nonlocal bar
        if kind == "total":  # a hashing pass starts (n bytes)
            if bar is not None:
                bar.close()
            bar = ByteProgress("sha256", n) if n else None
        elif bar is not None:
            bar.advance(n)

    try:
        yield hook
    finally:
        if bar is not None:
            bar.close()


def _bytes_under(directory: Path) -> int:
    """Bytes of every file under ``directory`` (downloads in progress included)."""
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _print_result(result) -> None:
    out = sys.stdout
    report = result.report
    pin = result.revision or "-"
    if result.commit and result.commit != result.revision:
        pin += f" ({result.commit[:12]})"
    where = f"{result.model_id} [{result.source}] @ {pin}" if result.model_id else result.local_dir
    print(f"{where} -> {result.local_dir}", file=out)
    for note in result.notes:
        print(f"note: {note}", file=out)
    if result.removed:
        print(f"replaced {len(result.removed)} wrong file(s): {', '.join(result.removed[:5])}", file=out)
    if result.requested:
        print(f"downloaded/resumed {len(result.requested)} file(s)", file=out)
    if result.download_error:
        print(f"download error: {result.download_error}", file=out)
    print(("complete: " if report.complete else "INCOMPLETE: ") + report.summary(), file=out)
    for f in report.problems[:MAX_LISTED]:
        sizes = ""
        if f.actual_size is not None or f.expected_size is not None:
            sizes = f" {f.actual_size if f.actual_size is not None else '-'}/{f.expected_size if f.expected_size is not None else '?'} bytes"
        partial = f", {f.partial_bytes} bytes in a resumable partial file" if f.partial_bytes else ""
        detail = f" ({f.detail})" if f.detail else ""
        print(f"  {f.state:<11} {f.path}{sizes}{partial}{detail}", file=out)
    if len(report.problems) > MAX_LISTED:
        print(f"  ... and {len(report.problems) - MAX_LISTED} more (use --json for all)", file=out)
