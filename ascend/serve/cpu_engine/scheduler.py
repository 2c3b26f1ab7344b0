"""Continuous batching over a :class:`Generator`, in one thread, feeding asyncio consumers.

Each step admits waiting requests (up to ``max_seqs`` running, prefill tokens up to
``max_tokens_per_batch`` — one over-long prompt still runs alone), runs one forward for the
whole batch (prompts for new sequences, the last token for running ones), samples one token
per sequence and hands it to the request's queue. Cancelled requests (client gone, stop string
seen) are freed at the next step.

Failures stay as small as they can: one request's seeding or sampling failing fails that request;
a forward failing fails the batch it ran; the engine turns unhealthy for good only when the
generator says it is broken (e.g. its ranks fell out of step). ``health()`` also reports a step
that has run longer than ``step_timeout_s`` (a stuck rank) and the generator's own verdict
(ranks that stopped sending heartbeats).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from ascend.errors import AscendError
from ascend.serve.cpu_engine.generator import Generator

log = logging.getLogger("ascend.serve.cpu_engine")
GREEDY_BELOW = 1e-5  # temperatures under this sample greedily (dividing logits by ~0 overflows)
STEP_TIMEOUT_S = 60.0  # a step running longer than this means a rank is stuck


@dataclass
class SamplingParams:
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """One token from ``logits``: [vocab] float32. Greedy at temperature 0 (xLLM's default) and
    at tiny temperatures."""
    if params.temperature < GREEDY_BELOW or params.top_k == 1:
        return int(torch.argmax(logits))
    x = logits.float() / params.temperature
    if params.top_k > 0 and params.top_k < x.numel():
        kth = torch.topk(x, params.top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_x, order = torch.sort(x, descending=True)
        probs = torch.softmax(sorted_x, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of strictly better tokens
        sorted_x = sorted_x.masked_fill(before > params.top_p, float("-inf"))
        x = torch.full_like(x, float("-inf")).scatter(0, order, sorted_x)
    probs = torch.softmax(x, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    seq_id: int | None = None
    generated: int = 0
    rng: torch.Generator | None = None
    last_token: int | None = None

    def emit(self, kind: str, value) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))

    def cancel(self) -> None:
        self.cancelled.set()


def _unique(reqs: list[Request]) -> list[Request]:
    """``reqs`` without repeats (admitted requests may already be in ``running``)."""
    seen: set[int] = set()
    return [r for r in reqs if not (id(r) in seen or seen.add(id(r)))]


class Scheduler:
    def __init__(self, generator: Generator, eos_ids: set[int], *, max_seqs: int, max_tokens_per_batch: int,
                 step_timeout_s: float = STEP_TIMEOUT_S):
        self.generator = generator
        self.eos_ids = set(eos_ids)
        self.max_seqs = max(1, max_seqs)
        self.max_tokens_per_batch = max(1, max_tokens_per_batch)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.cond = threading.Condition()
        self.stopping = False
        self.failed: str | None = None  # set when the generator is broken for good: /health turns 503
        self.step_timeout_s = step_timeout_s
        self.step_started: float | None = None  # monotonic start of the step running now
        self.thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def submit(self, req: Request) -> None:
        with self.cond:
            if self.failed:
                req.emit("error", self.failed)
                return
            self.waiting.append(req)
            self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join(timeout=30)

    def health(self) -> str | None:
        """None when serving works, else why not (thread-safe: reads state only)."""
        if self.failed:
            return self.failed
        if not self.stopping and self.thread.ident is not None and not self.thread.is_alive():
            return "the scheduler thread has stopped (see the log)"
        started = self.step_started
        if started is not None and time.monotonic() - started > self.step_timeout_s:
            return (f"a model step has been running for {time.monotonic() - started:.0f} s "
                    f"(limit {self.step_timeout_s:.0f} s): a rank is stuck")
        check = getattr(self.generator, "health", None)
        return check() if check is not None else None

    @property
    def load(self) -> int:
        return len(self.waiting) + len(self.running)

    def _finish(self, req: Request, reason: str, kind: str = "finish") -> None:
        if req.seq_id is not None:
            self.generator.free(req.seq_id)
            req.seq_id = None
        req.emit(kind, reason)

    def _fail(self, req: Request, what: str, err: Exception) -> None:
        """End this request with an error; the others go on (the caller logs the traceback)."""
        message = f"{what} failed: {type(err).__name__}: {err}"
        try:
            self._finish(req, message, "error")
        except Exception:  # freeing failed too: the request still gets its answer
            req.seq_id = None
            req.emit("error", message)

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.stopping and not self.waiting and not self.running:
                    self.cond.wait()
                if self.stopping:
                    for req in list(self.running) + list(self.waiting):
                        self._finish(req, "abort")
                    self.running, self.waiting = [], deque()
                    return
                budget, admitted = self.max_tokens_per_batch, []
                while self.waiting and len(self.running) + len(admitted) < self.max_seqs:
                    nxt = self.waiting[0]
                    if nxt.cancelled.is_set():
                        self.waiting.popleft()
                        nxt.emit("finish", "abort")
                        continue
                    if admitted and len(nxt.prompt_ids) > budget:
                        break
                    budget -= len(nxt.prompt_ids)
                    admitted.append(self.waiting.popleft())
            self.step_started = time.monotonic()
            try:
                self._step(admitted)
            except AscendError as err:  # the runner refused this batch's input; the job stays usable
                log.error("batch rejected: %s", err.line())
                for req in _unique(self.running + admitted):
                    if req.seq_id is not None:
                        self.generator.free(req.seq_id)
                        req.seq_id = None
                    req.emit("rejected", err.line())
                self.running = []
            except Exception as err:  # the forward failed: fail its batch; the generator says if it is broken
                log.exception("model step failed")
                for req in _unique(self.running + admitted):
                    self._fail(req, "model step", err)
                self.running = []
                broken = getattr(self.generator, "broken", None)
                if broken:
                    self.failed = f"model execution failed: {broken}"
                    with self.cond:
                        for req in list(self.waiting):
                            req.emit("error", self.failed)
                        self.waiting = deque()
            finally:
                self.step_started = None

    def _step(self, admitted: list[Request]) -> None:
        for req in list(self.running):
            if req.cancelled.is_set():
                self.running.remove(req)
                self._finish(req, "abort")
        for req in list(admitted):
            try:
                req.seq_id = self.generator.new_sequence()
                if req.params.seed is not None:
                    req.rng = torch.Generator().manual_seed(int(req.params.seed))
            except Exception as err:
                log.exception("starting a request failed")
                admitted.remove(req)
                self._fail(req, "starting the request", err)
        batch = self.running + admitted
        self.running = batch
        if not batch:
            return
        tokens = [req.prompt_ids if req.last_token is None else [req.last_token] for req in batch]
        logits = self.generator.forward([req.seq_id for req in batch], tokens)
        still = []
        for row, req in enumerate(batch):
            try:
                token = sample(logits[row], req.params, req.rng)
            except Exception as err:
                log.exception("sampling failed")
                self._fail(req, "sampling", err)
                continue
            req.last_token = token
            req.generated += 1
            stop = (token in self.eos_ids and not req.params.ignore_eos) or token in req.params.stop_token_ids
            if stop:
                self._finish(req, "stop")
                continue
            req.emit("token", token)
            if req.generated >= req.params.max_tokens:
                self._finish(req, "length")
                continue
            still.append(req)
        self.running = still
