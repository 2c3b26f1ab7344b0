"""The conversion pipeline: jobs, check, run the files (in parallel, resumable), finalize.

Output directory state:

- ``<out>/.ascend-convert/jobs.json``  the jobs (and its digest, recipe hash) this dir belongs to
- ``<out>/.ascend-convert/done/*.json`` one record per finished weight file: size and sha256
- ``*.partial``                        a file being written (deleted on rerun)
- ``config.json``, tokenizer, index, ``quant_model_description.json``, ``ascend-sharding.json``
                                       written once every weight file is done (finalize)
- ``ascend-manifest.json``             written last; its presence means the output is complete

Memory: ``ascend.convert.memory.peak_rss_bytes(workers)``, independent of checkpoint size.
"""

from __future__ import annotations

import contextlib
import glob
import json
import multiprocessing as mp
import os
import shutil
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from ascend.checkpoint.files import MANIFEST, STATE_DIR
from ascend.checkpoint.safetensors_io import SafetensorsDir, file_sha256, resolve_source
from ascend.convert.adapters import BOOKKEEPING_FILES, WEIGHT_SUFFIXES, source_format
from ascend.convert.describe import describe_jobs  # noqa: F401 (the CLI and tests import it from here)
from ascend.convert.finalize import finalize
from ascend.convert.jobs import ConvertJobs, ConvertOptions, OutputFile, Piece, build_jobs
from ascend.convert.w8a8_pieces import calibrated_jobs, needs_calibration
from ascend.errors import CheckpointError, ConvertError
from ascend.fileio import write_json
from ascend.procs import die_with_parent, dir_lock
from ascend.progress import ByteProgress
from ascend.recipe.schema import CalibrationSection


@dataclass
class ConvertResult:
    out_dir: str
    files_written: list[str]
    files_skipped: list[str]
    complete: bool  # manifest written
    bytes_written: int
    seconds: float
    calibrated: bool = False  # static W8A8: the output's calibration is done (and passed its gate)


def load_source(src_dir: str | Path, opts: ConvertOptions | None = None):
    """(source, ModelArgs) of a source checkpoint, with one-line errors.

    The source is a ``SafetensorsDir``, or for another ``opts.source_format`` what its adapter
    opens (``ascend.convert.adapters``: the same read interface under HF names).
    """
    from ascend.models.args import load_model_args

    src_dir = Path(src_dir)
    fmt = source_format(opts.source_format) if opts is not None else None
    if fmt is not None:
        return fmt.load(src_dir, opts)
    if not (src_dir / "config.json").is_file():
        if not src_dir.exists():
            what = "does not exist"
        elif not src_dir.is_dir():
            what = "is a file, not a checkpoint directory"
        else:
            what = "has no config.json"
        raise CheckpointError(f"{src_dir} {what}",
                              fix="point --src at a Hugging Face checkpoint directory (ascend fetch RECIPE downloads one)")
    args = load_model_args(src_dir)
    return SafetensorsDir(src_dir), args


def conversion_jobs(src_dir: str | Path, opts: ConvertOptions, out_dir: str | Path | None = None,
                    before_calibration: Callable | None = None, calibrate: Callable | None = None) -> ConvertJobs:
    """The jobs; with ``out_dir``, static W8A8 pieces use that output's calibration, made first by
    ``calibrate()`` when there is none (``w8a8_pieces.calibrated_jobs``)."""
    from ascend.errors import PlanError

    opts.validate()  # e.g. a missing extra: one line (exit 2), nothing listed or written
    src, args = load_source(src_dir, opts)
    try:
        jobs = build_jobs(src, args, opts)
        return calibrated_jobs(jobs, out_dir, lambda calib: build_jobs(src, args, opts, calib), before_calibration,
                               calibrate)
    except PlanError as err:  # split rules from ascend.models: surface as a conversion problem
        raise ConvertError(err.what, why=err.why, fix=err.fix) from None
    finally:
        src.close()


# ---------------------------------------------------------------------------------------------
# dry run


def _state_dir(out: Path) -> Path:
    return out / STATE_DIR


def _done_path(out: Path, rel: str) -> Path:
    return _state_dir(out) / "done" / (rel.replace("/", "__") + ".json")


def _check_ownership(out: Path, digest: str, recipe_hash: str | None, force: bool,
                     force_hint: str = "pass --force") -> None:
    """Refuse to write into a directory made for another recipe/jobs (unless --force)."""
    manifest = out / MANIFEST
    state = _state_dir(out) / "jobs.json"
    if force:
        for p in (manifest, state):
            if p.exists():
                p.unlink()
        shutil.rmtree(_state_dir(out) / "done", ignore_errors=True)
        return
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        # The jobs digest covers the source fingerprint and every option that changes a byte of
        # the output; two recipes that produce the same jobs produce the same files.
        if m.get("plan_digest") != digest:
            raise ConvertError(
                f"{out} holds a conversion made by another recipe or with other options",
                why=f"its manifest has recipe hash {m.get('recipe_hash')}, jobs {m.get('plan_digest')}; this run is "
                f"recipe {recipe_hash}, jobs {digest}",
                fix=f"choose another output directory, or {force_hint} to overwrite it",
            )
    if state.is_file():
        s = json.loads(state.read_text())
        if s.get("digest") != digest:
            raise ConvertError(
                f"{out} holds a partial conversion made by another recipe or with other options",
                why=f"jobs {s.get('digest')} (recipe {s.get('recipe_hash')}) vs this run's {digest} (recipe {recipe_hash})",
                fix=f"choose another output directory, or {force_hint} to start over",
            )
    elif out.is_dir() and any(p.name != STATE_DIR for p in out.iterdir()) and not manifest.is_file():
        raise ConvertError(
            f"{out} is not empty and was not made by ascend convert",
            fix=f"choose an empty or new output directory, or {force_hint} to write into it",
        )


def _remove_stale_weights(out: Path, listed: set[str]) -> None:
    """--force: weight files and indexes of an earlier conversion that this jobs does not write."""
    for d in (out, out / "mtp"):
        if not d.is_dir():
            continue
        for p in d.iterdir():
            rel = str(p.relative_to(out))
            if p.is_file() and rel not in listed and p.name.endswith(
                    (".safetensors", ".safetensors.index.json", ".partial", *WEIGHT_SUFFIXES, *BOOKKEEPING_FILES)):
                p.unlink()


def _is_done(out: Path, rel: str, digest: str, check_hash: bool = True) -> bool:
    """A file counts as done when its record matches the jobs and the file on disk (size+sha256)."""
    rec_path = _done_path(out, rel)
    path = out / rel
    if not rec_path.is_file() or not path.is_file():
        return False
    try:
        rec = json.loads(rec_path.read_text())
    except ValueError:
        return False
    if rec.get("jobs") != digest or path.stat().st_size != rec.get("size"):
        return False
    return not check_hash or file_sha256(path) == rec.get("sha256")


def _partials(path: Path) -> list[Path]:
    """Partial files of ``path`` any process may have left: ``<name>[.<host>-<pid>].partial``
    (``partial_name``) and MindSpore's ``<stem>.partial<suffix>``."""
    return [*path.parent.glob(glob.escape(path.name) + "*.partial"),
            *path.parent.glob(glob.escape(path.stem) + ".partial" + glob.escape(path.suffix))]


def files_for_node(jobs: ConvertJobs, node_rank: int, nnodes: int) -> list[tuple[str, OutputFile]]:
    """Deterministic disjoint subset: file i goes to node i mod nnodes (in jobs order)."""
    return [(rel, f) for i, (rel, f) in enumerate(jobs.all_files()) if i % nnodes == node_rank]


# ---------------------------------------------------------------------------------------------
# workers


_progress_queue = None


def _init_worker(queue, threads: int, parent: int) -> None:
    import signal

    import torch

    global _progress_queue
    die_with_parent(parent)  # kill -9 of the parent must not leave workers writing into --out
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops the pool, no worker tracebacks
    _progress_queue = queue
    torch.set_num_threads(threads)


def _convert_one(src_dir: str, out_dir: str, rel: str, pieces: list[dict], digest: str,
                 source_format: str = "hf", source_config: str | None = None) -> tuple[str, int, str]:
    """Worker entry: write one output file and its done record."""
    from ascend.convert.execute import open_source, write_file
    from ascend.convert.w8a8_pieces import load_calibration

    out = Path(out_dir)
    path = out / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    queue = _progress_queue

    def progress(n: int) -> None:
        if queue is not None:
            queue.put(n)

    plist = [Piece(**{**p, "outputs": [(o[0], o[1], tuple(o[2])) for o in p["outputs"]],
                      "rows": tuple(p["rows"]) if p["rows"] else None,
                      "cols": tuple(p["cols"]) if p["cols"] else None}) for p in pieces]
    src = open_source(src_dir, source_format, source_config)
    size, sha = write_file(src, path, plist, metadata={"format": "pt"}, progress=progress,
                           calib=lambda: load_calibration(out_dir, cached=True))
    write_json(_done_path(out, rel), {"file": rel, "size": size, "sha256": sha, "jobs": digest})
    return rel, size, sha


def _free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


# ---------------------------------------------------------------------------------------------
# the run


def convert(
    src_dir: str | Path,
    out_dir: str | Path,
    opts: ConvertOptions,
    *,
    workers: int = 1,
    force: bool = False,
    node_rank: int = 0,
    nnodes: int = 1,
    finalize_only: bool = False,
    recipe_hash: str | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda s: None,
    calibration: CalibrationSection | None = None,
    force_hint: str = "pass --force",
    device: str | None = None,
    calibrate_only: bool = False,
) -> ConvertResult:
    """Convert ``src_dir`` into ``out_dir`` (resumable). Static W8A8 linears are calibrated first,
    on one node (the parts of a multi-node conversion use the calibration an earlier single-node
    run made). ``calibration``: the recipe's ``convert.calibration``; a finished calibration made
    with other settings is another conversion's (refused without ``force``). None (flag mode): a
    finished calibration in the output is used as it is (``ascend calibrate``'s), else one with
    the schema's defaults is made. ``device``: where calibration runs (default
    ``calibration.device``); with static linears on one node, ``npu`` is checked before any work
    (BackendUnavailable, exit 2, without torch_npu). ``calibrate_only``: stop after the
    calibration (``calibrated`` says whether there was one to make)."""
    t0 = time.monotonic()
    src_dir = resolve_source(src_dir)  # a symlink loop: exit 2, naming it
    src_dir, out = str(Path(src_dir).resolve()), Path(out_dir).resolve()
    if opts.source_config is not None:  # recorded in the manifest: make it valid from any directory
        opts = replace(opts, source_config=str(Path(opts.source_config).resolve()))
    if not 0 <= node_rank < nnodes:
        raise ConvertError(f"--node-rank {node_rank} is outside --nnodes {nnodes}", fix="use 0 <= node-rank < nnodes")
    if out == Path(src_dir):
        raise ConvertError("the output directory is the source directory", fix="choose another --out")
    jobs = conversion_jobs(src_dir, opts)
    for warning in jobs.warnings:
        log(f"warning: {warning}")
    cfg = calibration or CalibrationSection()
    static = needs_calibration([f for _, f in jobs.all_files()])
    if static and nnodes == 1:  # a missing torch_npu: one line before any work (calibrated yet or not)
        from ascend.quant.calibrate import resolve_device

        device = resolve_device(device or cfg.device)
    with _output_lock(out, node_rank, nnodes, finalize_only):
        if static:  # calibrates into out: under the lock
            def run_calibration(check_owner: Callable[[], None]) -> None:
                from ascend.quant.calibrate import Runtime, calibrate, is_current
                from ascend.quant.store import finished

                if calibration is None and finished(out):  # flag mode: e.g. made by `ascend calibrate`
                    return
                scheme = opts.precision.w8a8_scheme
                if not is_current(src_dir, out, cfg, scheme):  # something will be calibrated into out
                    check_owner()
                calibrate(src_dir, out, cfg, scheme=scheme, runtime=Runtime(device=device, log=log))

            jobs = conversion_jobs(src_dir, opts, out, lambda j: _check_ownership(out, j.digest(), recipe_hash, force, force_hint),
                                   run_calibration if nnodes == 1 else None)
        if calibrate_only:  # the job before the parts of a multi-node conversion
            return ConvertResult(str(out), [], [], False, 0, time.monotonic() - t0, calibrated=static)
        return _convert_into(src_dir, out, jobs, opts, workers=workers, force=force, force_hint=force_hint,
                             node_rank=node_rank,
                             nnodes=nnodes, finalize_only=finalize_only, recipe_hash=recipe_hash, progress=progress,
                             log=log, t0=t0)


@contextlib.contextmanager
def _output_lock(out: Path, node_rank: int, nnodes: int, finalize_only: bool) -> Iterator[None]:
    """One conversion writes into ``out`` at a time: an exclusive lock on ``.ascend-convert/lock``.
    A part of a multi-node conversion (``--nnodes > 1``) writes a disjoint set of files: it
    shares that lock with the other parts and holds its own part's lock exclusively, so two runs
    of one part, or a single-node run beside the parts, still exclude each other."""
    lock, what = f"{STATE_DIR}/lock", "ascend convert"
    if nnodes == 1 or finalize_only:
        with dir_lock(out, what, name=lock):
            yield
        return
    with dir_lock(out, what, name=lock, shared=True), \
            dir_lock(out, f"{what} --node-rank {node_rank}", name=f"{lock}.part-{node_rank}-of-{nnodes}"):
        yield


def _convert_into(src_dir: str, out: Path, jobs: ConvertJobs, opts: ConvertOptions, *, workers: int, force: bool,
                  force_hint: str,
                  node_rank: int, nnodes: int, finalize_only: bool, recipe_hash: str | None, progress: bool,
                  log: Callable[[str], None], t0: float) -> ConvertResult:
    """The conversion proper, under the output lock."""
    digest = jobs.digest()
    out.mkdir(parents=True, exist_ok=True)
    _check_ownership(out, digest, recipe_hash, force, force_hint)
    if force:
        _remove_stale_weights(out, {rel for rel, _ in jobs.all_files()})
    if (out / MANIFEST).is_file():
        log(f"{out} is already complete (ascend-manifest.json present); nothing to do")
        return ConvertResult(str(out), [], [rel for rel, _ in jobs.all_files()], True, 0, time.monotonic() - t0)
    (_state_dir(out) / "done").mkdir(parents=True, exist_ok=True)
    write_json(_state_dir(out) / "jobs.json", {"digest": digest, "recipe_hash": recipe_hash, "source": src_dir,
                                               "jobs": jobs.to_json()})
    written: list[str] = []
    skipped: list[str] = []
    nbytes = 0
    if not finalize_only:
        mine = files_for_node(jobs, node_rank, nnodes)
        todo = []
        for rel, f in mine:
            for p in _partials(out / rel):
                p.unlink(missing_ok=True)  # left by a killed run (ours, or MindSpore's writer)
            if not force and _is_done(out, rel, digest):
                skipped.append(rel)
            else:
                todo.append((rel, f))
        need = sum(f.nbytes for _, f in todo)
        free = _free_bytes(out)
        if need > free:
            raise ConvertError(
                f"not enough space in {out}",
                why=f"{need / 1e9:.2f} GB to write, {free / 1e9:.2f} GB free",
                fix="free space or choose another --out",
            )
        if skipped:
            log(f"resuming: {len(skipped)} file(s) already complete, {len(todo)} to write")
        nbytes = _run_files(src_dir, out, todo, digest, workers, progress, (opts.source_format, opts.source_config))
        written = [rel for rel, _ in todo]
    complete = all(_is_done(out, rel, digest, check_hash=False) for rel, _ in jobs.all_files())
    if complete:
        records = {rel: json.loads(_done_path(out, rel).read_text()) for rel, _ in jobs.all_files()}
        finalize(jobs, src_dir, out, digest, recipe_hash, records)
    elif finalize_only:
        missing = [rel for rel, _ in jobs.all_files() if not _is_done(out, rel, digest, check_hash=False)]
        raise ConvertError(
            f"cannot finalize {out}: {len(missing)} weight file(s) not done yet, e.g. {missing[0]}",
            fix="run the remaining --node-rank parts first",
        )
    else:
        log(f"node {node_rank}/{nnodes} done; index and manifest are written when every part is finished")
    return ConvertResult(str(out), written, skipped, complete, nbytes, time.monotonic() - t0)


def _run_files(src_dir: str, out: Path, todo: list[tuple[str, OutputFile]], digest: str, workers: int, progress: bool,
               source: tuple[str, str | None] = ("hf", None)) -> int:
    if not todo:
        return 0
    total = sum(f.nbytes for _, f in todo)
    jobs = [(rel, [asdict(p) for p in f.pieces]) for rel, f in todo]
    workers = max(1, min(workers, len(jobs)))
    if workers == 1:  # in-process: no start-up cost, same code path as a worker
        import torch

        global _progress_queue
        bar = ByteProgress("convert", total) if progress else None
        _progress_queue = _LocalQueue(bar) if bar else None
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # per-chunk ops are memory-bound; thread hand-offs only add latency
        try:
            for rel, pieces in jobs:
                _convert_one(src_dir, str(out), rel, pieces, digest, *source)
        finally:
            torch.set_num_threads(threads)
            _progress_queue = None
            if bar:
                bar.close()
        return total
    # Fork where it is safe: workers start in milliseconds with torch already imported, where
    # spawned ones spend seconds importing it. Safe means Linux and no other Python thread (a lock
    # held by one would stay held in the child); ProcessPoolExecutor (Python >= 3.11, gh-90622)
    # forks every worker at the first submit, before starting its own thread, and the progress
    # bar starts after that. The workers run torch single-threaded, so OpenMP state inherited
    # from the parent is never used.
    fork = sys.platform.startswith("linux") and sys.version_info >= (3, 11) and threading.active_count() == 1
    ctx = mp.get_context("fork" if fork else "spawn")
    queue = ctx.Queue() if progress else None
    threads = 1  # parallelism comes from the worker processes
    # The pool is created, and so its workers forked, in this thread: the workers' parent-death
    # signal fires when the forking thread ends (see ascend.procs.die_with_parent).
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(queue, threads, os.getpid())) as pool:
        pending = {pool.submit(_convert_one, src_dir, str(out), rel, pieces, digest, *source) for rel, pieces in jobs}
        bar = ByteProgress("convert", total) if progress else None
        try:
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                if bar:
                    bar.drain(queue)
                for fut in done:
                    fut.result()  # re-raise a worker's error here
        except BaseException as err:
            for fut in pending:
                fut.cancel()
            if isinstance(err, KeyboardInterrupt):  # stop now; a rerun resumes (partials are removed)
                for proc in list(pool._processes.values()):  # no public way to stop busy workers before 3.14
                    proc.kill()
            raise
        finally:
            if bar:
                bar.drain(queue)
                bar.close()
    return total


class _LocalQueue:
    def __init__(self, bar: ByteProgress):
        self.bar = bar

    def put(self, n: int) -> None:
        self.bar.advance(n)
