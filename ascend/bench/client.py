"""A lean async streaming client: one request's timings and token counts from the SSE stream.

Definitions (as vLLM's ``bench serve``):

- TTFT: request sent -> first chunk carrying generated text of any kind (``content``,
  ``reasoning_content``, a tool-call name or arguments; ``text`` on /v1/completions). The
  role-only first chunk and empty deltas do not count.
- ITL: the gaps between consecutive text-bearing chunks. A chunk carrying several tokens (MTP,
  detokenizer hold-back) is one gap, so ITL is per chunk, not per token.
- E2E: request sent -> end of the stream.
- output tokens: the server's final ``usage.completion_tokens`` (``stream_options.include_usage``
  is requested); when the server sends no usage, the concatenated generated text (content +
  reasoning + tool-call names and arguments) tokenized with the model's tokenizer.
- TPOT: (E2E - TTFT) / (output tokens - 1), for requests with at least 2 output tokens.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class RequestResult:
    ok: bool
    error: str | None = None
    start: float = 0.0
    ttft: float | None = None
    e2e: float = 0.0
    itl: list[float] = field(default_factory=list)
    text: str = ""
    usage_output_tokens: int | None = None
    usage_input_tokens: int | None = None
    output_tokens: int | None = None  # filled by the runner (usage, else tokenizer)
    input_tokens: int | None = None

    @property
    def tpot(self) -> float | None:
        if not self.ok or self.ttft is None or not self.output_tokens or self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)


def generated_text(chunk: dict[str, Any]) -> str:
    """Everything the model generated in one chunk (chat delta or completions text)."""
    parts = []
    for choice in chunk.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("text"), str):  # /v1/completions
            parts.append(choice["text"])
        delta = choice.get("delta") or {}
        for key in ("content", "reasoning_content", "reasoning"):
            if isinstance(delta.get(key), str):
                parts.append(delta[key])
        for call in delta.get("tool_calls") or []:
            fn = (call or {}).get("function") or {}
            parts += [v for v in (fn.get("name"), fn.get("arguments")) if isinstance(v, str)]
    return "".join(parts)


async def stream_request(client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]) -> RequestResult:
    """POST one streaming request and time it; failures are returned (ok=False), never raised."""
    res = RequestResult(ok=False, start=time.perf_counter())
    last: float | None = None
    try:
        async with client.stream("POST", url, json=body, headers=headers) as resp:
            if resp.status_code != 200:
                await resp.aread()
                res.error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                return res
            done = False
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, comments, event/id fields
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                now = time.perf_counter()
                chunk = json.loads(data)
                if not isinstance(chunk, dict):
                    raise ValueError(f"event is not a JSON object: {data[:80]!r}")
                if "error" in chunk and not chunk.get("choices"):
                    res.error = f"server error event: {json.dumps(chunk['error'])[:200]}"
                    return res
                usage = chunk.get("usage")
                if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
                    res.usage_output_tokens = int(usage["completion_tokens"])
                    res.usage_input_tokens = usage.get("prompt_tokens")
                piece = generated_text(chunk)
                if piece:
                    if last is None:
                        res.ttft = now - res.start
                    else:
                        res.itl.append(now - last)
                    last = now
                    res.text += piece
            res.e2e = time.perf_counter() - res.start
            if not done:
                res.error = "stream ended without data: [DONE]"
            elif res.ttft is None:
                res.error = "stream carried no generated text"
            else:
                res.ok = True
    except (httpx.HTTPError, ValueError) as err:  # ValueError: a data event that is not JSON
        res.error = f"{type(err).__name__}: {err}"[:300]
    res.e2e = res.e2e or time.perf_counter() - res.start
    return res
