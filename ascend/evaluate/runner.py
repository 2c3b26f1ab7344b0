"""Send each task's items to an OpenAI-compatible endpoint and score the replies.

One chat completion per item (greedy, ``temperature 0``), the server applying the model's chat
template, thinking switched with ``chat_template_kwargs.enable_thinking`` as the smoke suite does.
Only ``content`` is scored: with a reasoning parser the thinking goes to ``reasoning_content``.
A request that fails counts as a wrong answer and is recorded with its error.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ascend.evaluate.scoring import extract_choice, extract_number, numbers_equal
from ascend.evaluate.tasks import Item, load_items


@dataclass
class TaskResult:
    name: str
    kind: str
    source: str
    samples: int
    correct: int
    threshold: float | None
    errors: int = 0
    seconds: float = 0.0
    answers: list[dict[str, Any]] = field(default_factory=list)  # per item: id, gold, got, ok, reply

    @property
    def score(self) -> float:
        return self.correct / self.samples if self.samples else 0.0

    @property
    def passed(self) -> bool:
        return self.threshold is None or self.score >= self.threshold

    def line(self) -> str:
        limit = f" (threshold {self.threshold:.2f})" if self.threshold is not None else " (no threshold)"
        errs = f", {self.errors} request errors" if self.errors else ""
        return f"{self.name}: {self.score:.3f} = {self.correct}/{self.samples}{limit}{errs}"


@dataclass
class EvalReport:
    base_url: str
    model: str
    thinking: bool
    tasks: list[TaskResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(t.passed for t in self.tasks)

    def failed(self) -> list[TaskResult]:
        return [t for t in self.tasks if not t.passed]

    def summary(self) -> str:
        return "; ".join(t.line() for t in self.tasks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url, "model": self.model, "thinking": self.thinking, "ok": self.ok,
            "tasks": [asdict(t) | {"score": round(t.score, 4), "passed": t.passed} for t in self.tasks],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"


def judge(item: Item, reply: str) -> tuple[Any, bool]:
    if item.options:
        got = extract_choice(reply, list(item.options))
        return got, got == item.gold
    got = extract_number(reply)
    return got, numbers_equal(got, item.gold)


def run_eval(ep: Any, cfg: Any, *, cache_dir: Any = None, on_task: Callable[[TaskResult], None] | None = None) -> EvalReport:
    """Every task of ``cfg`` (a recipe's ``eval`` section) against ``ep`` (``ascend.smoke.Endpoint``).

    Datasets are loaded (and downloaded) for every task before the first request, so a bad
    file or dataset id stops the run at once with exit 2.
    """
    import httpx
    import openai

    loaded = [(task, load_items(task, cache_dir)) for task in cfg.tasks]
    report = EvalReport(ep.root, ep.model, cfg.thinking)
    client = openai.OpenAI(base_url=ep.api, api_key=ep.api_key or "none", max_retries=0, timeout=cfg.timeout_s,
                           http_client=httpx.Client(trust_env=False, timeout=cfg.timeout_s))

    def ask(item: Item) -> dict[str, Any]:
        try:
            r = client.chat.completions.create(
                model=ep.model, messages=[{"role": "user", "content": item.prompt}], temperature=0,
                max_tokens=cfg.max_tokens, extra_body={"chat_template_kwargs": {"enable_thinking": cfg.thinking}},
            )
            reply, error = r.choices[0].message.content or "", None
        except (openai.OpenAIError, httpx.HTTPError) as err:
            reply, error = "", f"{type(err).__name__}: {str(err)[:200]}"
        got, ok = judge(item, reply)
        return {"id": item.id, "gold": item.gold, "got": got, "ok": ok, "reply": reply[-300:], "error": error}

    try:
        with ThreadPoolExecutor(max_workers=cfg.concurrency) as pool:
            for task, items in loaded:
                t0 = time.monotonic()
                answers = list(pool.map(ask, items))
                result = TaskResult(
                    task.name, task.kind, task.path or f"modelscope:{task.dataset}", len(items),
                    sum(a["ok"] for a in answers), task.threshold, errors=sum(a["error"] is not None for a in answers),
                    seconds=round(time.monotonic() - t0, 3), answers=answers,
                )
                report.tasks.append(result)
                if on_task:
                    on_task(result)
    finally:
        client.close()
    return report
