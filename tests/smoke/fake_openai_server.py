"""A small scripted OpenAI-compatible server for testing the smoke suite.

It behaves like xLLM / vLLM with reasoning and tool parsers on (word = token, greedy, so answers
are deterministic), and each name in ``faults`` switches on one known misbehaviour seen in real
engines. The tests show that every check passes on the good server and fails on its fault.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

FAULTS = {
    "no_health",  # /health -> 503
    "models_missing",  # /v1/models lists another id
    "empty_content",  # content "" on plain chat
    "usage_wrong",  # total_tokens != prompt + completion
    "no_done",  # stream ends without [DONE]
    "bad_sse",  # a non-JSON data event
    "stream_differs",  # streamed text differs from the non-streamed answer
    "ignore_max_tokens",  # generates past max_tokens, finish 'stop'
    "ignore_stop",  # stop strings not applied
    "reasoning_leak",  # thinking text stays in content as <think>...</think>
    "answer_in_reasoning",  # everything in reasoning_content, content empty (glm45 parser bug)
    "thinking_off_ignored",  # enable_thinking=false still returns reasoning
    "bad_tool_json",  # truncated arguments JSON
    "tool_schema_mismatch",  # arguments miss the required property
    "tool_finish_stop",  # finish_reason 'stop' on a tool call
    "tool_markup_leak",  # tool call returned as raw <tool_call> text in content
    "zero_arg_empty_string",  # zero-argument call has arguments ""
    "stream_tool_broken",  # streamed argument deltas drop the closing brace
    "tool_result_loop",  # answers a tool result with another tool call
    "long_prompt_500",  # prompts over 256 tokens -> 500
    "concurrency_fail",  # every 3rd streamed request -> 503
    "bad_request_500",  # malformed body -> 500 plain text (xLLM SetFailed style)
    "slow",  # 30 ms per token
}

ANSWER = "Hello there , friend . How are you doing today ? I am a scripted test server ."
REASONING = "The user wants a reply . I will answer briefly ."
MAX_MODEL_LEN = 512


def make_app(model: str, faults: set[str], api_key: dict[str, str | None]):
    app = FastAPI()
    counter = {"streams": 0}

    @app.middleware("http")
    async def auth(request: Request, call_next):
        key = api_key.get("key")
        if key and request.headers.get("authorization") != f"Bearer {key}":
            return JSONResponse({"error": {"message": "invalid api key"}}, status_code=401)
        return await call_next(request)

    @app.get("/health")
    def health():
        return PlainTextResponse("", status_code=503 if "no_health" in faults else 200)

    @app.get("/v1/models")
    def models():
        mid = "some-other-model" if "models_missing" in faults else model
        return {"data": [{"id": mid, "object": "model", "owned_by": "test", "max_model_len": MAX_MODEL_LEN}]}

    def words_of(messages: list[dict[str, Any]]) -> int:
        n = 0
        for m in messages:
            c = m.get("content")
            n += len(c.split()) if isinstance(c, str) else 0
        return n + 4 * len(messages)

    def generate(body: dict[str, Any]) -> dict[str, Any]:
        """The greedy 'model': returns reasoning tokens, content tokens, tool call, finish."""
        messages = body["messages"]
        thinking = (body.get("chat_template_kwargs") or {}).get("enable_thinking", True)
        if "thinking_off_ignored" in faults:
            thinking = True
        tools = body.get("tools") or []
        last = messages[-1]["role"]
        reasoning = REASONING.split() if thinking else []
        call = None
        content = ANSWER.split()
        if tools and last == "user" or (tools and last == "tool" and "tool_result_loop" in faults):
            fn = tools[0]["function"]
            args: Any = {"city": "Paris"} if "city" in fn["parameters"].get("properties", {}) else {}
            if "tool_schema_mismatch" in faults:
                args = {"town": "Paris"}
            arguments = json.dumps(args)
            if "bad_tool_json" in faults:
                arguments = arguments[:-1]
            if "zero_arg_empty_string" in faults and not args:
                arguments = ""
            call = {"name": fn["name"], "arguments": arguments}
            content = []
        elif last == "tool":
            content = "It is 18 degrees and sunny in Paris .".split()
        finish = "tool_calls" if call else "stop"
        if "tool_finish_stop" in faults and call:
            finish = "stop"
        if "tool_markup_leak" in faults and call:
            content = [f"<tool_call>{call['name']}</tool_call>"]
            call, finish = None, "stop"
        # max_tokens counts reasoning + content tokens.
        limit = body.get("max_tokens") or 5120
        if "ignore_max_tokens" not in faults and len(reasoning) + len(content) > limit:
            keep = limit
            reasoning, content = reasoning[:keep], content[: max(0, keep - len(reasoning))]
            finish = "length"
        text = " ".join(content)
        stops = body.get("stop") or []
        if "ignore_stop" not in faults:
            for s in stops:
                if s in text:
                    text = text[: text.index(s)].rstrip()
                    finish = "stop"
        if "empty_content" in faults and not tools:
            text = ""
        rtext = " ".join(reasoning)
        if "reasoning_leak" in faults and rtext:
            text, rtext = f"<think>{rtext}</think>{text}", ""
        if "answer_in_reasoning" in faults and rtext:
            text, rtext = "", rtext + " " + text
        completion = len(reasoning) + len(text.split()) + (3 if call else 0)
        return {"reasoning": rtext, "content": text, "call": call, "finish": finish, "completion": completion}

    def error(status: int, msg: str):
        return JSONResponse({"error": {"message": msg, "type": "invalid_request_error"}}, status_code=status)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return error(400, "body is not JSON")
        if not isinstance(body.get("messages"), list):
            if "bad_request_500" in faults:
                return PlainTextResponse("internal error", status_code=500)
            return error(400, "messages must be a list")
        if body.get("model") != model:
            return error(404, f"model {body.get('model')!r} not found")
        prompt = words_of(body["messages"])
        if prompt + (body.get("max_tokens") or 0) > MAX_MODEL_LEN:
            return error(400, "prompt too long")
        if "long_prompt_500" in faults and prompt > 256:
            return PlainTextResponse("out of memory", status_code=500)
        out = generate(body)
        usage = {"prompt_tokens": prompt, "completion_tokens": out["completion"], "total_tokens": prompt + out["completion"]}
        if "usage_wrong" in faults:
            usage["total_tokens"] += 1
        call_json = None
        if out["call"]:
            call_json = {"id": "call_abc", "type": "function", "function": out["call"]}
        if not body.get("stream"):
            message = {"role": "assistant", "content": out["content"] or None}
            if out["reasoning"]:
                message["reasoning_content"] = out["reasoning"]
            if call_json:
                message["tool_calls"] = [call_json]
            return {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": out["finish"]}],
                "usage": usage,
            }
        counter["streams"] += 1
        if "concurrency_fail" in faults and counter["streams"] % 3 == 0:
            return PlainTextResponse("The number of concurrent requests has reached the limit.", status_code=503)

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            obj = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return f"data: {json.dumps(obj)}\n\n"

        async def events():
            delay = 0.03 if "slow" in faults else 0.001
            yield chunk({"role": "assistant"})
            words = out["reasoning"].split()
            for i, w in enumerate(words):
                await asyncio.sleep(delay)
                yield chunk({"reasoning_content": (" " if i else "") + w})
            content = out["content"]
            if "stream_differs" in faults:
                content = content.replace("friend", "pal")
            for i, w in enumerate(content.split(" ") if content else []):
                await asyncio.sleep(delay)
                yield chunk({"content": (" " if i else "") + w})
            if "bad_sse" in faults:
                yield "data: {not json\n\n"
            if call_json:
                args = call_json["function"]["arguments"]
                if "stream_tool_broken" in faults:
                    args = args[:-1]
                yield chunk({"tool_calls": [{"index": 0, "id": "call_abc", "type": "function", "function": {"name": call_json["function"]["name"], "arguments": ""}}]})
                for piece in (args[: len(args) // 2], args[len(args) // 2 :]):
                    await asyncio.sleep(delay)
                    yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            yield chunk({}, out["finish"])
            if (body.get("stream_options") or {}).get("include_usage"):
                obj = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [], "usage": usage}
                yield f"data: {json.dumps(obj)}\n\n"
            if "no_done" not in faults:
                yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


class FakeServer:
    """Runs :func:`make_app` with uvicorn on 127.0.0.1 on a free port in a daemon thread."""

    def __init__(self, model: str = "scripted"):
        self.model = model
        self.faults: set[str] = set()
        self.api_key: dict[str, str | None] = {"key": None}
        self._server = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeServer":
        import uvicorn

        config = uvicorn.Config(make_app(self.model, self.faults, self.api_key), host="127.0.0.1", port=0, log_level="error", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not (self._server.started and self._server.servers):
            if time.monotonic() > deadline:
                raise RuntimeError("fake server did not start")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
