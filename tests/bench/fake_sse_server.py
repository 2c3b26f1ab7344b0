"""A scripted OpenAI-compatible streaming server with known timing, for the bench's arithmetic.

Every chat request streams the same script: a role-only chunk at once, then after ``ttft`` the
first text, then one chunk every ``gap`` seconds. The chunks carry 1, 0, 3, 1 (a tool-call
name), 2 (tool-call arguments) and 1 tokens (word = token; reasoning and tool-call deltas
included), then the finish chunk, a usage chunk (when ``usage``) and ``[DONE]``. So, exactly:

    TTFT = ttft;  content-bearing chunks after the first = 4;  E2E = ttft + 4 * gap
    tokens in the text = 8;  TPOT = 4 * gap / ((usage tokens or 8) - 1)
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS_IN_SCRIPT = 8
TEXT_CHUNKS_AFTER_FIRST = 4


def script(gap: float) -> list[tuple[float, dict]]:
    """(sleep before, delta) after the first text; the empty chunk sits half-way in a gap."""
    return [
        (0.0, {"reasoning_content": " w1"}),
        (gap / 2, {"content": ""}),  # 0 tokens: no TTFT, no ITL gap
        (gap / 2, {"content": " w2 w3 w4"}),  # several tokens in one chunk
        (gap, {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": " fn", "arguments": ""}}]}),
        (gap, {"tool_calls": [{"index": 0, "function": {"arguments": " w5 w6"}}]}),
        (gap, {"content": " w7"}),
    ]


class FakeServer:
    def __init__(self, ttft: float = 0.3, gap: float = 0.1, usage: int | None = WORDS_IN_SCRIPT, fail_every: int = 0):
        self.ttft, self.gap, self.usage, self.fail_every = ttft, gap, usage, fail_every
        self.model = "fake-model"
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends when the connection closes

            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.bodies.append(body)
                    n = len(server.bodies)
                if server.fail_every and n % server.fail_every == 0:
                    self.send_response(500)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "scripted failure"}}')
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                server.stream(self.wfile, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def stream(self, out, body: dict) -> None:
        def send(obj) -> None:
            out.write(f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode())
            out.flush()

        def chunk(delta: dict, finish=None) -> dict:
            return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": self.model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        send(chunk({"role": "assistant", "content": ""}))
        time.sleep(self.ttft)
        for delay, delta in script(self.gap):
            if delay:
                time.sleep(delay)
            send(chunk(delta))
        send(chunk({}, "tool_calls"))
        if self.usage is not None and (body.get("stream_options") or {}).get("include_usage"):
            send({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": self.model, "choices": [],
                  "usage": {"prompt_tokens": 5, "completion_tokens": self.usage, "total_tokens": 5 + self.usage}})
        send("[DONE]")

    def __enter__(self) -> "FakeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
