"""What every smoke check works with: the settings (:class:`SmokeConfig`), the per-run
:class:`Context` (endpoint, clients, memo), the outcomes (:class:`Fail`, :class:`Skip`) and the
small assertions several checks share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from ascend.recipe.schema import SmokeSection
from ascend.smoke.probes import GREETING
from ascend.smoke.wire import Endpoint, SSEError, StreamRecord, stream_chat


class Fail(Exception):
    """The check ran and the endpoint misbehaved (message says how)."""


class Skip(Exception):
    """The check cannot run here (message says why)."""


_SCHEMA = SmokeSection()  # the only smoke defaults there are: the recipe schema's


@dataclass(frozen=True)
class SmokeConfig:
    """What to check and the limits to hold the endpoint to (the ``smoke`` settings).

    Built from a recipe (:meth:`from_recipe`) or, in flag mode, from the schema's defaults.
    ``thinking`` / ``tools``: whether the server was started with a reasoning / tool-call parser
    (when false those checks are skipped with that reason). ``thresholds``: see THRESHOLDS.
    """

    checks: tuple[str, ...] | None = None  # None = every check
    skip: dict[str, str] = field(default_factory=dict)  # check name -> reason
    concurrency: int = _SCHEMA.concurrency
    thresholds: dict[str, float] = field(default_factory=dict)
    max_model_len: int | None = None
    thinking: bool = True
    tools: bool = True
    max_tokens: int = _SCHEMA.max_tokens  # completion length of the plain checks (chat, stream, stop, concurrency)
    thinking_max_tokens: int = 1024

    @classmethod
    def from_recipe(cls, recipe: Any) -> SmokeConfig:
        """The recipe's ``smoke`` section plus what its ``serve`` section enables."""
        smoke, serve = recipe.smoke, recipe.serve
        return cls(
            checks=tuple(smoke.checks), concurrency=smoke.concurrency, max_tokens=smoke.max_tokens,
            thresholds=dict(smoke.thresholds), max_model_len=serve.max_model_len,
            thinking=bool(serve.reasoning_parser), tools=bool(serve.tool_call_parser),
        )


# Threshold name -> (metric in the concurrency check, "max" = upper bound / "min" = lower bound).
THRESHOLDS: dict[str, tuple[str, str]] = {
    "ttft_p50_ms": ("ttft_p50_ms", "max"),
    "ttft_p99_ms": ("ttft_p99_ms", "max"),
    "itl_p50_ms": ("itl_p50_ms", "max"),
    "itl_p99_ms": ("itl_p99_ms", "max"),
    "min_tokens_per_s": ("tokens_per_s", "min"),
}

MARKUP = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<arg_key>", "<arg_value>", "<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>")

@dataclass
class Context:
    ep: Endpoint
    cfg: SmokeConfig
    client: Any  # openai.OpenAI
    http: httpx.Client
    memo: dict[str, Any] = field(default_factory=dict)

    def budget(self, n: int) -> int:
        """``n`` completion tokens, capped at half the context so prompt + output always fit."""
        return min(n, self.cfg.max_model_len // 2) if self.cfg.max_model_len else n

    def thinking(self, on: bool) -> dict[str, Any]:
        return {"chat_template_kwargs": {"enable_thinking": on}}

    def chat(self, messages: list[dict[str, Any]], *, max_tokens: int | None = None, thinking: bool = False, **kw: Any) -> Any:
        """One non-streaming completion through the openai client."""
        max_tokens = max_tokens or self.cfg.max_tokens
        extra = {**self.thinking(thinking), **kw.pop("extra_body", {})}
        return self.client.chat.completions.create(
            model=self.ep.model, messages=messages, temperature=0, max_tokens=max_tokens, extra_body=extra, **kw
        )

    def stream(self, messages: list[dict[str, Any]], *, max_tokens: int | None = None, thinking: bool = False, **kw: Any) -> StreamRecord:
        max_tokens = max_tokens or self.cfg.max_tokens
        body = {"messages": messages, "temperature": 0, "max_tokens": max_tokens, **self.thinking(thinking), **kw}
        try:
            return stream_chat(self.http, self.ep, body)
        except SSEError as err:
            raise Fail(f"stream: {err}") from None


def reasoning_of(message: Any) -> str:
    """``message.reasoning_content`` (not in the openai types; arrives as an extra field)."""
    value = getattr(message, "reasoning_content", None)
    if value is None and getattr(message, "model_extra", None):
        value = message.model_extra.get("reasoning_content")
    return value or ""


def no_markup(text: str, where: str) -> None:
    for tag in MARKUP:
        if tag in text:
            raise Fail(f"{where} contains raw model markup {tag!r} (parser did not strip it): {text[:120]!r}")


def check_usage(usage: Any, max_tokens: int) -> str:
    if usage is None:
        raise Fail("response has no usage")
    p, c, t = usage.prompt_tokens, usage.completion_tokens, usage.total_tokens
    if not (p and p > 0):
        raise Fail(f"usage.prompt_tokens is {p}")
    if not (c and c > 0):
        raise Fail(f"usage.completion_tokens is {c}")
    if t != p + c:
        raise Fail(f"usage.total_tokens {t} != prompt {p} + completion {c}")
    if c > max_tokens:
        raise Fail(f"usage.completion_tokens {c} > max_tokens {max_tokens}")
    return f"usage {p}+{c}"


def baseline(ctx: Context) -> Any:
    """The non-streaming greeting answer at temperature 0 (computed once, shared by checks)."""
    if "baseline" not in ctx.memo:
        ctx.memo["baseline"] = ctx.chat(GREETING)
    return ctx.memo["baseline"]
