"""Wire-level HTTP for the smoke suite: endpoint URLs and a strict Server-Sent-Events reader.

The official ``openai`` client hides the wire (it tolerates a missing ``[DONE]``, merges
malformed events, retries); checks that are about the wire use :func:`read_sse` on a raw
``httpx`` response instead. Rules follow xLLM's ``stream_call.h`` and the OpenAI API:
``Content-Type: text/event-stream``, events ``data: <json>\\n\\n``, the last one ``data: [DONE]``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import httpx


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible server. ``root`` has no ``/v1``; ``api`` is ``root + /v1``."""

    root: str
    model: str
    api_key: str | None = None
    timeout: float = 300.0

    @classmethod
    def parse(cls, base_url: str, model: str, api_key: str | None = None, timeout: float = 300.0) -> "Endpoint":
        root = base_url.rstrip("/")
        if root.endswith("/v1"):
            root = root[: -len("/v1")]
        if not root.startswith(("http://", "https://")):
            root = "http://" + root
        return cls(root, model, api_key, timeout)

    @property
    def api(self) -> str:
        return self.root + "/v1"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


class SSEError(Exception):
    """The event stream broke the protocol; the message says how."""


@dataclass
class StreamRecord:
    """What one streamed chat completion looked like on the wire.

    ``token_times``: monotonic time of every chunk that carried text (content, reasoning or
    tool-call arguments), for TTFT / inter-token latency.
    """

    chunks: list[dict[str, Any]] = field(default_factory=list)
    saw_done: bool = False
    start: float = 0.0
    token_times: list[float] = field(default_factory=list)

    def _deltas(self) -> Iterator[dict[str, Any]]:
        for chunk in self.chunks:
            for choice in chunk.get("choices") or []:
                yield choice.get("delta") or {}

    @property
    def content(self) -> str:
        return "".join(d.get("content") or "" for d in self._deltas())

    @property
    def reasoning(self) -> str:
        return "".join(d.get("reasoning_content") or "" for d in self._deltas())

    @property
    def finish_reason(self) -> str | None:
        reasons = [c.get("finish_reason") for ch in self.chunks for c in ch.get("choices") or [] if c.get("finish_reason")]
        return reasons[-1] if reasons else None

    @property
    def usage(self) -> dict[str, Any] | None:
        found = [ch["usage"] for ch in self.chunks if ch.get("usage")]
        return found[-1] if found else None

    def tool_calls(self) -> list[dict[str, Any]]:
        """Tool-call deltas merged by ``index``: name from the first, arguments concatenated."""
        calls: dict[int, dict[str, Any]] = {}
        for delta in self._deltas():
            for part in delta.get("tool_calls") or []:
                idx = part.get("index", 0)
                call = calls.setdefault(idx, {"id": None, "name": "", "arguments": ""})
                call["id"] = call["id"] or part.get("id")
                fn = part.get("function") or {}
                if fn.get("name"):
                    call["name"] += fn["name"]
                call["arguments"] += fn.get("arguments") or ""
        return [calls[i] for i in sorted(calls)]


def read_sse(response: httpx.Response, start: float | None = None) -> StreamRecord:
    """Read a chat-completion event stream strictly; raise :class:`SSEError` on any protocol fault."""
    ctype = response.headers.get("content-type", "")
    if not ctype.startswith("text/event-stream"):
        raise SSEError(f"Content-Type is {ctype!r}, expected text/event-stream")
    rec = StreamRecord(start=time.monotonic() if start is None else start)
    data_lines: list[str] = []

    def finish_event() -> None:
        if not data_lines:
            return
        payload = "\n".join(data_lines)
        data_lines.clear()
        if rec.saw_done:
            raise SSEError(f"event after [DONE]: {payload[:80]!r}")
        if payload.strip() == "[DONE]":
            rec.saw_done = True
            return
        try:
            chunk = json.loads(payload)
        except json.JSONDecodeError as err:
            raise SSEError(f"event {len(rec.chunks) + 1} is not JSON ({err.msg}): {payload[:80]!r}") from None
        if not isinstance(chunk, dict):
            raise SSEError(f"event {len(rec.chunks) + 1} is not a JSON object: {payload[:80]!r}")
        if "error" in chunk and "choices" not in chunk:
            raise SSEError(f"server sent an error event: {json.dumps(chunk['error'])[:200]}")
        if chunk.get("object") != "chat.completion.chunk":
            raise SSEError(f"event {len(rec.chunks) + 1} has object {chunk.get('object')!r}, expected 'chat.completion.chunk'")
        rec.chunks.append(chunk)
        for choice in chunk.get("choices") or []:
            d = choice.get("delta") or {}
            if d.get("content") or d.get("reasoning_content") or any(
                (tc.get("function") or {}).get("arguments") or (tc.get("function") or {}).get("name")
                for tc in d.get("tool_calls") or []
            ):
                rec.token_times.append(time.monotonic())
                break

    for line in response.iter_lines():
        if line == "":
            finish_event()
        elif line.startswith(":"):
            continue  # SSE comment / keep-alive
        elif line.startswith("data:"):
            data_lines.append(line[5:].removeprefix(" "))
        elif line.split(":", 1)[0] in ("event", "id", "retry"):
            continue
        else:
            raise SSEError(f"line is not an SSE field: {line[:80]!r}")
    finish_event()
    if not rec.saw_done:
        raise SSEError("stream ended without 'data: [DONE]'")
    if not rec.chunks:
        raise SSEError("stream carried no chunks before [DONE]")
    return rec


def stream_chat(client: httpx.Client, ep: Endpoint, body: dict[str, Any]) -> StreamRecord:
    """POST a streaming chat completion and read it strictly; HTTP errors raise ``SSEError``."""
    body = {"model": ep.model, **body, "stream": True}
    start = time.monotonic()
    with client.stream("POST", ep.api + "/chat/completions", json=body, headers=ep.headers(), timeout=ep.timeout) as resp:
        if resp.status_code != 200:
            resp.read()
            raise SSEError(f"HTTP {resp.status_code}: {resp.text[:200]}")
        return read_sse(resp, start)
