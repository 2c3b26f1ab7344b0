"""Running the reference model: ``compute_logits`` (one call, spawns ranks) and ``ModelRunner``
(the rank-0-driven runtime the CPU serving engine is built on).

ModelRunner contract (stable; ``ascend-xllm-cpu`` codes against it)
-------------------------------------------------------------------
Every rank of a job is a separate OS process started by a launcher (as xLLM is). Each process
constructs::

    runner = ModelRunner(model_dir, rank=r, world_size=W, dp=D, ep=E,
                         master_addr="10.0.0.11", master_port=29611)

with identical ``model_dir`` (an HF dir, or a ``sharded`` dir written for W ranks), ``world_size``,
``dp``, ``ep``, ``master_addr`` and ``master_port`` on every rank. ``world_size == 1`` needs no
address. Construction joins the gloo process group (blocking until all W ranks have joined, at most
``timeout_s``), then loads this rank's weights. Bad input raises ``CheckpointError`` (bad dir) or
``PlanError`` (dp/ep do not divide the world, heads or experts) on every rank.

Rank 0 (``runner.is_driver``) drives; every other rank calls ``runner.follow(on_release=None)``,
which executes the commands rank 0 broadcasts and returns after ``shutdown()``; ``on_release``
runs when the shutdown command arrives, before the acknowledgement (the CPU engine ignores
SIGTERM from there on, so a launcher's late SIGTERM cannot cut its clean exit short).

Rank 0 API (single-threaded: call from one thread only):

- ``new_sequence() -> int``: a fresh sequence id (no collective; the sequence's caches are created
  on first ``forward``). With ``dp > 1`` sequence ``s`` is served by attention-DP group ``s % dp``.
- ``forward(seq_ids: list[int], token_lists: list[list[int]]) -> torch.Tensor``: appends
  ``token_lists[i]`` (non-empty) to sequence ``seq_ids[i]`` and returns the logits of each
  sequence's last new token, ``[len(seq_ids), vocab_size]`` float32. The first call for a sequence
  is its prefill; later calls decode (one token or several: chunked prefill works the same). A
  sequence may appear at most once per call. Inputs are validated on rank 0 before anything is
  broadcast (unknown/freed id, duplicate id, empty list, token id outside ``[0, vocab_size)``,
  total length above ``max_model_len``): ``AscendError`` (exit code 2), and the job stays usable.
- ``free(seq_id)``: drop a sequence's caches on every rank (unknown ids are ignored; a no-op after
  ``shutdown()``).
- ``shutdown()``: tell the followers to return, wait (a few seconds at most) until each has
  acknowledged, leave the process group. Idempotent. Also run by ``close()`` / the context manager.
- ``health() -> str | None``: None while every rank is alive and in step; else why not (a rank
  silent for 5 heartbeats, with ``heartbeat_s`` given; or ``broken``: a forward failed after its
  command went out, so the ranks are out of step for good). Thread-safe.

Attributes on every rank: ``rank``, ``world_size``, ``is_driver``, ``config`` (config.json dict),
``args`` (``ModelArgs``), ``vocab_size``, ``max_model_len`` (``max_position_embeddings``),
``eos_token_ids`` (list[int] from config.json, possibly empty).

Determinism: logits do not depend on how sequences are batched together or on W/dp/ep beyond
float32 summation order (sharded vs single-process agree within 1e-5).

Commands travel as JSON in a uint8 tensor over ``torch.distributed.broadcast`` (no pickle).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import tempfile
import time
import traceback
from multiprocessing import forkserver
from pathlib import Path
from typing import Sequence as Seq

import torch
import torch.distributed as dist

from ascend import errors
from ascend.checkpoint.files import SHARDING_FILE
from ascend.errors import AscendError
from ascend.procs import ignore_sigint_in, sigint_deferred
from ascend.reference.model import ReferenceModel, Sequence, check_layout
from ascend.reference.parallel import Heartbeat, Parallel, destroy_parallel, free_port, init_parallel

RELEASED_KEY = "ascend/released"  # followers that acknowledged the shutdown command
RELEASE_WAIT_S = 5.0


def run_batch(model: ReferenceModel, seqs_by_id: dict[int, Sequence], seq_ids: list[int],
              token_lists: list[list[int]], *, all_positions: bool) -> torch.Tensor | None:
    """Run one step on every rank (collective). Sequence ``s`` belongs to DP group ``s % dp``.

    Returns on rank 0 the logits ``[B, V]`` of each sequence's last new token, or with
    ``all_positions`` ``[sum of new tokens, V]`` in input order; None on other ranks.
    """
    par = model.par
    groups = [sid % par.dp for sid in seq_ids]
    dp_counts = [sum(len(t) for t, g in zip(token_lists, groups) if g == d) for d in range(par.dp)]
    mine = [i for i, g in enumerate(groups) if g == par.dp_rank]  # this DP group's sequences
    seqs = [seqs_by_id.setdefault(seq_ids[i], Sequence()) for i in mine]
    hidden = model.forward(seqs, [token_lists[i] for i in mine], dp_counts)  # [this group's tokens, h]
    lengths = torch.tensor([len(token_lists[i]) for i in mine], dtype=torch.int64)
    if all_positions:  # every row; its place in the whole batch is its token's input position
        starts = torch.tensor([0] + [len(t) for t in token_lists]).cumsum(0)
        keep = torch.arange(hidden.shape[0])
        targets = torch.cat([torch.arange(int(starts[i]), int(starts[i + 1])) for i in mine] + [keep[:0]])
        total = int(starts[-1])
    else:  # the last new token of each sequence
        keep = lengths.cumsum(0) - 1
        targets = torch.tensor(mine, dtype=torch.int64)
        total = len(seq_ids)
    logits = model.logits(hidden[keep])  # collective within the attention-TP group
    if par.dp == 1:
        return logits if par.rank == 0 else None
    out = logits.new_zeros(total, model.vocab_size)
    if par.tp_rank == 0:
        out[targets] = logits
    par.all_reduce_world(out)  # each row is non-zero on exactly one rank: the sum is exact
    return out if par.rank == 0 else None


def _load_on_every_rank(model_dir, par: Parallel) -> ReferenceModel:
    """Load this rank's model; if any rank fails, every rank raises (instead of the others hanging
    in their first collective) and leaves the process group."""
    failure: BaseException | None = None
    try:
        model = ReferenceModel(model_dir, par, mtp=False)
    except BaseException as err:  # re-raised below, after telling the other ranks
        failure = err
    if not par.all_ok(failure is None):
        destroy_parallel(par)
        if failure is not None:
            raise failure
        raise errors.CheckpointError(f"{model_dir}: another rank failed to load its part", fix="see that rank's error")
    return model


class ModelRunner:
    """See the module docstring for the contract."""

    def __init__(self, model_dir: str | Path, *, rank: int = 0, world_size: int = 1, dp: int = 1, ep: int = 1,
                 master_addr: str = "127.0.0.1", master_port: int = 0, timeout_s: float = 300.0,
                 heartbeat_s: float | None = None):
        self.par: Parallel = init_parallel(rank, world_size, dp, ep, master_addr, master_port, timeout_s)
        self.model = _load_on_every_rank(model_dir, self.par)
        self._heartbeat = Heartbeat(self.par, heartbeat_s) if heartbeat_s and self.par.distributed else None
        self.broken: str | None = None
        self.args = self.model.args
        self.config = self.args.config
        eos = self.config.get("eos_token_id")
        self.eos_token_ids: list[int] = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        self._seqs: dict[int, Sequence] = {}
        self._live: dict[int, int] = {}  # rank 0: live sequence id -> tokens so far (any DP group)
        self._next_id = 0
        self._closed = False

    rank = property(lambda self: self.par.rank)
    world_size = property(lambda self: self.par.world_size)
    is_driver = property(lambda self: self.par.rank == 0)
    vocab_size = property(lambda self: self.args.vocab_size)
    max_model_len = property(lambda self: self.args.max_position_embeddings)

    # --- rank 0 ------------------------------------------------------------------------------
    def new_sequence(self) -> int:
        self._require_driver("new_sequence")
        sid = self._next_id
        self._next_id += 1
        self._live[sid] = 0
        return sid

    def forward(self, seq_ids: Seq[int], token_lists: Seq[Seq[int]]) -> torch.Tensor:
        self._require_driver("forward")
        seq_ids = [int(s) for s in seq_ids]
        token_lists = [[int(t) for t in toks] for toks in token_lists]
        if len(seq_ids) != len(token_lists) or not seq_ids:
            raise AscendError("forward needs one token list per sequence id, and at least one sequence")
        if len(set(seq_ids)) != len(seq_ids):
            raise AscendError("forward: a sequence id appears twice in one call")
        unknown = [s for s in seq_ids if s not in self._live]
        if unknown:
            raise AscendError(f"forward: unknown or freed sequence id {unknown[0]}", fix="call new_sequence() first")
        self.model.check_tokens(token_lists, [self._live[s] for s in seq_ids])
        try:
            self._broadcast({"op": "forward", "seq_ids": seq_ids, "tokens": token_lists})
            out = run_batch(self.model, self._seqs, seq_ids, token_lists, all_positions=False)
        except Exception as err:
            if self.par.distributed:  # the other ranks may be mid-step: they are out of step for good
                self.broken = f"{type(err).__name__}: {err}"
            raise
        for sid, toks in zip(seq_ids, token_lists):
            self._live[sid] += len(toks)
        return out

    def free(self, seq_id: int) -> None:
        if self._closed or self.broken:  # nothing left to free (a scheduler draining after shutdown or a failure)
            return
        self._require_driver("free")
        self._live.pop(int(seq_id), None)
        self._broadcast({"op": "free", "seq_ids": [int(seq_id)]})
        self._seqs.pop(int(seq_id), None)

    def health(self) -> str | None:
        return self.broken or (self._heartbeat.verdict if self._heartbeat else None)

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.is_driver and self.par.distributed:
                self._broadcast({"op": "shutdown"})
                self._wait_released()
        finally:
            if self._heartbeat:
                self._heartbeat.stop()
            destroy_parallel(self.par)

    close = shutdown

    def __enter__(self) -> ModelRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # --- other ranks -------------------------------------------------------------------------
    def follow(self, on_release=None) -> None:
        """Execute rank 0's commands until it shuts down (non-zero ranks only); see the contract."""
        if self.is_driver:
            raise AscendError("follow() is for ranks other than 0; rank 0 drives with forward()")
        try:
            while True:
                cmd = self._receive()
                op = cmd["op"]
                if op == "forward":
                    run_batch(self.model, self._seqs, cmd["seq_ids"], cmd["tokens"], all_positions=False)
                elif op == "free":
                    for sid in cmd["seq_ids"]:
                        self._seqs.pop(sid, None)
                elif op == "shutdown":
                    self._closed = True
                    if on_release is not None:
                        on_release()
                    try:
                        self.par.store.add(RELEASED_KEY, 1)
                    except RuntimeError:  # rank 0 stopped waiting and left: nobody to tell
                        pass
                    destroy_parallel(self.par)
                    return
        finally:
            if self._heartbeat:
                self._heartbeat.stop()

    # --- plumbing ----------------------------------------------------------------------------
    def _require_driver(self, what: str) -> None:
        if not self.is_driver:
            raise AscendError(f"{what}() is rank 0's; other ranks call follow()")
        if self._closed:
            raise AscendError(f"{what}(): the runner was shut down")

    def _wait_released(self) -> None:
        """Until every follower has acknowledged the shutdown (or RELEASE_WAIT_S passed): rank 0
        exiting first would let a launcher signal followers that are already on their way out."""
        deadline = time.monotonic() + RELEASE_WAIT_S
        while self.par.store.add(RELEASED_KEY, 0) < self.par.world_size - 1 and time.monotonic() < deadline:
            time.sleep(0.02)

    def _broadcast(self, cmd: dict) -> None:
        if self.par.world_size == 1:
            return
        payload = torch.frombuffer(bytearray(json.dumps(cmd).encode()), dtype=torch.uint8)
        dist.broadcast(torch.tensor([payload.numel()], dtype=torch.int64), src=0)
        dist.broadcast(payload, src=0)

    def _receive(self) -> dict:
        size = torch.zeros(1, dtype=torch.int64)
        dist.broadcast(size, src=0)
        payload = torch.empty(int(size.item()), dtype=torch.uint8)
        dist.broadcast(payload, src=0)
        return json.loads(bytes(payload.tolist()).decode())


# --------------------------------------------------------------------------------------------
# compute_logits: one forward over fixed inputs, spawning ranks when needed
# --------------------------------------------------------------------------------------------
def compute_logits(model_dir: str | Path, input_ids, ranks: int | None = None, dp: int | None = None,
                   ep: int | None = None, *, timeout_s: float = 600.0) -> torch.Tensor:
    """Reference logits of ``input_ids`` for every position, float32.

    ``input_ids``: one sequence ``[T]`` (list or tensor) -> ``[T, vocab]``; or a batch ``[B, T]``
    (rows may differ in length when given as lists of lists) -> ``[sum(T_b), vocab]`` with rows in
    input order (``[B, T, vocab]`` when the input is a 2-D tensor). ``ranks`` > 1 spawns that many
    processes (gloo on 127.0.0.1, a free port) with attention TP = ranks / dp and EP = ep; a
    ``sharded`` dir takes ranks, dp and ep from its ``ascend-sharding.json`` by default.
    """
    batch, shape = _as_batch(input_ids)
    ranks, dp, ep = _layout_for(Path(model_dir), ranks, dp, ep)
    if ranks == 1:
        model = ReferenceModel(model_dir, mtp=False)
        model.check_tokens(batch)
        out = run_batch(model, {}, list(range(len(batch))), batch, all_positions=True)
    else:
        out = _spawn(model_dir, batch, ranks, dp, ep, timeout_s)
    return out.view(*shape, -1) if shape else out


def compute_mtp_logits(model_dir: str | Path, input_ids) -> torch.Tensor:
    """Single-process MTP logits of one sequence ``[T]``: row i pairs the main model's
    final-normed hidden state at position i with token ``i + 1`` and predicts token ``i + 2``.
    Returns ``[T - 1, vocab]`` float32. CheckpointError when the checkpoint has no MTP layer."""
    from ascend.errors import CheckpointError

    ids = [int(t) for t in (input_ids.tolist() if isinstance(input_ids, torch.Tensor) else input_ids)]
    model = ReferenceModel(model_dir, mtp=True)
    if model.mtp is None:
        raise CheckpointError(
            f"{model_dir}: no MTP layer (model.layers.{model.args.num_hidden_layers}.*)",
            fix="use a checkpoint with num_nextn_predict_layers >= 1 and its MTP weights",
        )
    model.check_tokens([ids])
    seq = Sequence()
    hidden = model.forward([seq], [ids])
    return model.mtp.forward([seq], hidden[:-1], [ids[1:]])


def _as_batch(input_ids) -> tuple[list[list[int]], tuple[int, ...] | None]:
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dim() == 1:
            return [input_ids.tolist()], None
        if input_ids.dim() == 2:
            return input_ids.tolist(), tuple(input_ids.shape)
        raise AscendError(f"input_ids must be [T] or [B, T], got shape {list(input_ids.shape)}")
    items = list(input_ids)
    if items and isinstance(items[0], (list, tuple)):
        return [[int(t) for t in row] for row in items], None
    return [[int(t) for t in items]], None


def _layout_for(model_dir: Path, ranks, dp, ep) -> tuple[int, int, int]:
    plan_path = model_dir / SHARDING_FILE
    if plan_path.is_file():
        try:
            plan = json.loads(plan_path.read_text())
        except (OSError, ValueError) as err:
            raise errors.CheckpointError(f"{plan_path}: cannot read", why=str(err)) from None
        par = plan.get("parallel", plan)
        world = int(par.get("world_size") or len(list(model_dir.glob("model-rank-*.safetensors"))))
        p_dp, p_ep = int(par.get("dp", 1)), int(par.get("ep", 1))
        for name, given, stored in (("ranks", ranks, world), ("dp", dp, p_dp), ("ep", ep, p_ep)):
            if given is not None and given != stored:
                raise errors.CheckpointError(
                    f"{plan_path}: the dir is sharded for {name}={stored}, not {given}", fix=f"pass --{name} {stored} or omit it"
                )
        return world, p_dp, p_ep
    return ranks or 1, dp or 1, ep or 1


def _rank_main(rank: int, world: int, dp: int, ep: int, port: int, model_dir: str, batch: list[list[int]],
               out_dir: str) -> None:
    """Body of one spawned rank: run the batch, rank 0 saves the logits; errors go to a file."""
    try:
        from safetensors.torch import save_file

        torch.set_num_threads(1)  # ranks share the host's cores
        par = init_parallel(rank, world, dp, ep, "127.0.0.1", port)
        try:
            model = _load_on_every_rank(model_dir, par)
            out = run_batch(model, {}, list(range(len(batch))), batch, all_positions=True)
            if rank == 0:
                save_file({"logits": out.contiguous()}, str(Path(out_dir) / "logits.safetensors"))
        finally:
            destroy_parallel(par)
    except AscendError as err:
        (Path(out_dir) / f"error-{rank}.txt").write_text(f"{type(err).__name__}\n{err.line()}")
    except BaseException as err:  # a bug: keep the traceback for the parent
        (Path(out_dir) / f"error-{rank}.txt").write_text(f"RuntimeError\n{type(err).__name__}: {err}\n{traceback.format_exc()}")


def _rank_context():
    """Processes for spawned ranks come from a fork server that has imported torch and this module
    once (importing torch costs seconds per process; plain fork is unsafe after OpenMP use)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["ascend.reference.runner"])
    ignore_sigint_in(forkserver.ensure_running)  # Ctrl-C: the parent stops the ranks, none prints a traceback
    return ctx


def _spawn(model_dir, batch, ranks: int, dp: int, ep: int, timeout_s: float) -> torch.Tensor:
    from safetensors.torch import load_file

    # validate cheaply in this process first (config, layout, token ids) so errors are immediate
    from ascend.models.args import load_model_args

    args = load_model_args(model_dir)
    check_layout(args, Parallel(rank=0, world_size=ranks, dp=dp, ep=ep))  # divisibility, before spawning
    bad = [t for row in batch for t in row if not 0 <= t < args.vocab_size]
    if bad or not all(batch):
        raise AscendError(f"token id {bad[0]} is outside the vocabulary [0, {args.vocab_size})" if bad else "empty sequence")
    ctx = _rank_context()
    with tempfile.TemporaryDirectory(prefix="ascend-logits-") as tmp:
        port = free_port()
        procs = [ctx.Process(target=_rank_main, args=(r, ranks, dp, ep, port, str(model_dir), batch, tmp), daemon=True)
                 for r in range(ranks)]
        try:
            with sigint_deferred():  # a Ctrl-C here must not leave a started rank unknown to the finally
                for p in procs:
                    p.start()
            for p in procs:
                p.join(timeout_s)
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join()
        # the rank that failed first, not the ranks that stopped because of it
        errs = sorted(Path(tmp).glob("error-*.txt"), key=lambda p: ("another rank failed" in p.read_text(), p.name))
        if errs:
            kind, _, line = errs[0].read_text().partition("\n")
            cls = getattr(errors, kind, None)
            if isinstance(cls, type) and issubclass(cls, AscendError):
                raise cls(line.strip())
            raise RuntimeError(f"reference rank failed: {line}")
        result = Path(tmp) / "logits.safetensors"
        if not result.is_file():
            codes = [p.exitcode for p in procs]
            raise RuntimeError(f"reference ranks exited without a result (exit codes {codes}, timeout {timeout_s}s)")
        return load_file(str(result))["logits"]
