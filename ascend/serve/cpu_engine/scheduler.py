"""Continuous batching over a :class:`Generator`, in one thread, feeding asyncio consumers.

Each step admits waiting requests (up to ``max_seqs`` running, prefill tokens up to
``max_tokens_per_batch`` — one over-long prompt still runs alone), runs one forward for the
whole batch (prompts for new sequences, the last token for running ones), samples one token
per sequence and hands it to the request's queue. Cancelled requests (client gone, stop string
seen) are freed at the next step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from dataclasses import dataclass, field

import torch

from ascend.errors import AscendError
from ascend.serve.cpu_engine.generator import Generator

log = logging.getLogger("ascend.serve.cpu_engine")


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
    """One token from ``logits``: [vocab] float32. Greedy at temperature 0 (xLLM's default)."""
    if params.temperature <= 0 or params.top_k == 1:
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


class Scheduler:
    def __init__(self, generator: Generator, eos_ids: set[int], *, max_seqs: int, max_tokens_per_batch: int):
        self.generator = generator
        self.eos_ids = set(eos_ids)
        self.max_seqs = max(1, max_seqs)
        self.max_tokens_per_batch = max(1, max_tokens_per_batch)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.cond = threading.Condition()
        self.stopping = False
        self.failed: str | None = None  # set when the model itself failed: /health turns 503
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

    @property
    def load(self) -> int:
        return len(self.waiting) + len(self.running)

    def _finish(self, req: Request, reason: str) -> None:
        if req.seq_id is not None:
            self.generator.free(req.seq_id)
            req.seq_id = None
        req.emit("finish", reason)

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
            try:
                self._step(admitted)
            except AscendError as err:  # the runner refused this batch's input; the job stays usable
                log.error("batch rejected: %s", err.line())
                for req in self.running + admitted:
                    if req.seq_id is not None:
                        self.generator.free(req.seq_id)
                        req.seq_id = None
                    req.emit("rejected", err.line())
                self.running = []
            except Exception as err:  # the model failed: fail every request, report unhealthy
                log.exception("forward failed")
                self.failed = f"model execution failed: {type(err).__name__}: {err}"
                with self.cond:
                    for req in self.running + admitted + list(self.waiting):
                        req.emit("error", self.failed)
                    self.running, self.waiting = [], deque()

    def _step(self, admitted: list[Request]) -> None:
        for req in list(self.running):
            if req.cancelled.is_set():
                self.running.remove(req)
                self._finish(req, "abort")
        for req in admitted:
            req.seq_id = self.generator.new_sequence()
            if req.params.seed is not None:
                req.rng = torch.Generator().manual_seed(int(req.params.seed))
        batch = self.running + admitted
        self.running = batch
        if not batch:
            return
        tokens = [req.prompt_ids if req.last_token is None else [req.last_token] for req in batch]
        logits = self.generator.forward([req.seq_id for req in batch], tokens)
        still = []
        for row, req in enumerate(batch):
            token = sample(logits[row], req.params, req.rng)
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
