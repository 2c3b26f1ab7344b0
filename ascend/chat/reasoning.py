"""Reasoning parsers: split model output into ``reasoning_content`` and ``content``.

All registered grammars (xLLM ``--reasoning_parser`` names; reference/xllm.md §4) put reasoning
between ``<think>`` and ``</think>``. What differs is where the model starts:
- GLM-4.7 / GLM-5 / DeepSeek-V3.1 templates end the prompt with ``<think>`` when thinking is on
  (the output starts inside reasoning) and with ``</think>`` when it is off;
- GLM-4.5 templates leave ``<think>`` to the model (or write ``<think></think>`` when off);
- ``deepseek-r1`` is forced: everything before ``</think>`` is reasoning.
So the parser is told whether the output starts inside reasoning, which the engine reads off the
rendered prompt (:func:`starts_in_reasoning`). An output that skips thinking therefore lands in
``content``, never in ``reasoning_content`` (reference/deployments.md pain point 11).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReasoningGrammar:
    start: str = "<think>"
    end: str = "</think>"
    forced: bool = False  # output always starts inside reasoning (deepseek-r1)


REASONING_GRAMMARS: dict[str, ReasoningGrammar] = {
    "glm45": ReasoningGrammar(),
    "glm47": ReasoningGrammar(),
    "glm5": ReasoningGrammar(),
    "deepseek-v3": ReasoningGrammar(),
    "deepseek-r1": ReasoningGrammar(forced=True),
    "qwen3": ReasoningGrammar(),
}


def get_reasoning_grammar(name: str) -> ReasoningGrammar:
    try:
        return REASONING_GRAMMARS[name]
    except KeyError:
        raise ValueError(f"unknown reasoning parser {name!r}; known: {', '.join(sorted(REASONING_GRAMMARS))}") from None


def starts_in_reasoning(grammar: ReasoningGrammar, prompt: str) -> bool:
    """Whether generation begins inside the reasoning block, judged from the rendered prompt."""
    if grammar.forced:
        return True
    tail = prompt.rstrip()
    return tail.endswith(grammar.start)


def held_back(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a marker (keep it back)."""
    best = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), best, -1):
            if marker.startswith(text[-n:]):
                best = n
                break
    return best


class ReasoningSplitter:
    """Streaming split; ``feed(delta) -> (reasoning_delta, content_delta)``; ``finish()`` flushes.

    Feeding the whole text at once gives the non-streaming result, so the two agree by construction.
    """

    def __init__(self, grammar: ReasoningGrammar, in_reasoning: bool):
        self.grammar = grammar
        self.in_reasoning = in_reasoning or grammar.forced
        self.seen_any = False  # a leading <think> is stripped only at the very start
        self.buffer = ""
        self.reasoning_seen = self.in_reasoning

    def feed(self, delta: str) -> tuple[str, str]:
        self.buffer += delta
        reasoning, content = [], []
        while self.buffer:
            if not self.seen_any:
                stripped = self.buffer.lstrip()
                if self.grammar.start.startswith(stripped) and stripped != self.grammar.start:
                    break  # might still become a leading <think>
                self.seen_any = True
                if stripped.startswith(self.grammar.start):
                    self.buffer = stripped[len(self.grammar.start):]
                    self.in_reasoning = self.reasoning_seen = True
                    continue
            if self.in_reasoning:
                idx = self.buffer.find(self.grammar.end)
                if idx >= 0:
                    reasoning.append(self.buffer[:idx])
                    self.buffer = self.buffer[idx + len(self.grammar.end):].lstrip("\n")
                    self.in_reasoning = False
                    continue
                keep = held_back(self.buffer, (self.grammar.end,))
                reasoning.append(self.buffer[: len(self.buffer) - keep])
                self.buffer = self.buffer[len(self.buffer) - keep:]
                break
            content.append(self.buffer)
            self.buffer = ""
        return "".join(reasoning), "".join(content)

    def finish(self) -> tuple[str, str]:
        rest, self.buffer = self.buffer, ""
        self.seen_any = True
        if self.in_reasoning:
            return rest, ""
        return "", rest


def split_reasoning(text: str, grammar: ReasoningGrammar, in_reasoning: bool) -> tuple[str | None, str]:
    """Non-streaming: ``(reasoning or None, content)``."""
    splitter = ReasoningSplitter(grammar, in_reasoning)
    r1, c1 = splitter.feed(text)
    r2, c2 = splitter.finish()
    reasoning = r1 + r2
    return (reasoning if splitter.reasoning_seen else None), (c1 + c2)
