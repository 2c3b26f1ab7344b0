"""The model behind the CPU engine, as a small interface the scheduler drives from rank 0.

``Generator`` is the rank-0 side of the reference runtime's runner (one process per rank; the
other ranks follow rank 0's calls). Tests use :class:`ScriptedGenerator`, which needs no weights.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch


class Generator(Protocol):
    vocab_size: int

    def new_sequence(self) -> int: ...

    def forward(self, seq_ids: list[int], token_lists: list[list[int]]) -> torch.Tensor:
        """Append ``token_lists[i]`` to sequence ``seq_ids[i]``; logits of each last position: [B, vocab] float32."""

    def free(self, seq_id: int) -> None: ...

    def shutdown(self) -> None: ...


class ScriptedGenerator:
    """Answers each sequence with the token ids ``script(prompt_ids)`` returns, then ``eos_id``.

    Logits put ``+20`` on the scripted token and 0 elsewhere, so greedy decoding follows the script
    and sampling at high temperature does not: the sampling code is exercised for real.
    """

    def __init__(self, vocab_size: int, eos_id: int, script: Callable[[list[int]], list[int]], *, delay_s: float = 0.0):
        self.vocab_size = vocab_size
        self.eos_id = eos_id
        self.script = script
        self.delay_s = delay_s
        self.sequences: dict[int, list[int]] = {}
        self.answers: dict[int, list[int]] = {}
        self.prompt_lens: dict[int, int] = {}
        self._next = 0
        self.max_batch_seen = 0

    def new_sequence(self) -> int:
        self._next += 1
        self.sequences[self._next] = []
        return self._next

    def forward(self, seq_ids, token_lists):
        import time

        if self.delay_s:
            time.sleep(self.delay_s)
        self.max_batch_seen = max(self.max_batch_seen, len(seq_ids))
        out = torch.zeros(len(seq_ids), self.vocab_size)
        for row, (sid, toks) in enumerate(zip(seq_ids, token_lists)):
            seq = self.sequences[sid]
            if not seq:
                self.answers[sid] = list(self.script(list(toks))) + [self.eos_id]
                self.prompt_lens[sid] = len(toks)
            seq.extend(toks)
            pos = len(seq) - self.prompt_lens[sid]
            answer = self.answers[sid]
            out[row, answer[min(pos, len(answer) - 1)]] = 20.0
        return out

    def free(self, seq_id):
        self.sequences.pop(seq_id, None)
        self.answers.pop(seq_id, None)
        self.prompt_lens.pop(seq_id, None)

    def shutdown(self):
        self.sequences.clear()
