"""OpenAI-compatible HTTP API of the CPU engine, with xLLM's observable behaviour (reference/xllm.md §5–6).

Routes: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``.
Like xLLM: greedy by default (temperature 0), ``max_tokens`` default 5120 (capped by the context),
unknown request fields ignored, ``/v1/models`` without a top-level ``object``, thinking on unless
``chat_template_kwargs.enable_thinking`` (or ``.thinking``) is false, ``finish_reason`` ``tool_calls``
when tools were called, SSE ending with ``data: [DONE]``. Unlike xLLM (which answers plain text
and 500s), every error is OpenAI's error JSON: client mistakes get a 4xx status (validation in
``validation.py``), a request the engine fails gets 500, an unhealthy engine 503 (``/health``
then says why: a dead or stuck rank, a step running too long). Prompts are rendered and
tokenized off the event loop, so a long one never stalls ``/health`` or other streams.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, FastAPI
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ascend.chat import ChatTemplate, Delta, OutputParser, TemplateError
from ascend.chat.reasoning import held_back
from ascend.serve.cpu_engine.scheduler import Request, SamplingParams, Scheduler
from ascend.serve.cpu_engine.text import Detokenizer, TextCodec
from ascend.serve.cpu_engine.validation import (
    ApiError,
    Body,
    BodyLimit,
    ChatBody,
    CompletionBody,
    check_text,
    validation_error,
)

XLLM_DEFAULT_MAX_TOKENS = 5120
CONCURRENCY_LIMIT_MESSAGE = "The number of concurrent requests has reached the limit."
DISCONNECT_POLL_S = 0.5  # how often a running request checks that its client is still there


@dataclass
class EngineState:
    codec: TextCodec
    template: ChatTemplate | None
    scheduler: Scheduler
    served_model: str
    reasoning_parser: str | None = None
    tool_call_parser: str | None = None
    max_concurrent_requests: int = 200
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    active: int = 0
    created: int = field(default_factory=lambda: int(time.time()))


class StopMatcher:
    """Cuts the text at the first stop string; holds back what could still become one."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.buffer = ""

    def feed(self, text: str) -> tuple[str, bool]:
        self.buffer += text
        if not self.stops:
            out, self.buffer = self.buffer, ""
            return out, False
        hits = [i for i in (self.buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.buffer = self.buffer[: min(hits)], ""
            return out, True
        keep = held_back(self.buffer, tuple(self.stops))
        out, self.buffer = self.buffer[: len(self.buffer) - keep], self.buffer[len(self.buffer) - keep:]
        return out, False

    def flush(self) -> str:
        out, self.buffer = self.buffer, ""
        return out


@dataclass
class Outcome:
    """How a generation ended, and the handle to end it early (synchronously, so it also works
    from a cancelled task when the client disconnects)."""

    finish_reason: str = "stop"
    completion_tokens: int = 0
    request: Request | None = None
    state: EngineState | None = None

    def release(self) -> None:
        if self.state is not None:
            if self.request is not None:
                self.request.cancel()  # no-op when finished; frees the sequence otherwise
            self.state.active -= 1
            self.state = None


def create_app(state: EngineState) -> FastAPI:
    app = FastAPI(title="ascend-xllm-cpu", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit_bytes=state.max_body_bytes)

    @app.exception_handler(ApiError)
    async def _api_error(_req, err: ApiError):
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_req, err: RequestValidationError):
        return validation_error(list(err.errors())).response()

    @app.exception_handler(Exception)
    async def _bug(_req, err: Exception):  # still logged by the server; the client gets JSON, not text
        return ApiError(500, f"internal error: {type(err).__name__}: {err}", type="server_error").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req, err: StarletteHTTPException):
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return ApiError(err.status_code, str(err.detail), type=kind).response()

    def authorize(request: HttpRequest) -> None:
        # a dependency, not an HTTP middleware: Starlette's BaseHTTPMiddleware wraps `receive`
        # and would hide client disconnects from the handlers
        if state.api_key and request.headers.get("authorization", "") != f"Bearer {state.api_key}":
            raise ApiError(401, "Incorrect or missing API key (send Authorization: Bearer <key>).",
                           type="authentication_error", code="invalid_api_key")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorize)])

    @app.get("/health")
    async def health():
        reason = state.scheduler.health()
        if reason:
            return JSONResponse(status_code=503, content={"status": "unhealthy", "reason": reason})
        return JSONResponse({"status": "ok"})

    @v1.get("/models")
    async def models():
        return {"data": [{"id": state.served_model, "created": state.created, "object": "model", "owned_by": "xllm"}]}

    @v1.post("/chat/completions")
    async def chat(body: ChatBody, http: HttpRequest):
        _check_request(state, body)
        if state.template is None:
            raise ApiError(400, "this model has no chat template; use /v1/completions")
        use_tools = bool(body.tools) and body.tool_choice != "none"
        kwargs = dict(body.chat_template_kwargs or {})
        if state.reasoning_parser:  # xLLM: thinking on unless the request turns it off
            thinking = bool(kwargs.get("enable_thinking", kwargs.get("thinking", True)))
            kwargs.setdefault("enable_thinking", thinking)
            kwargs.setdefault("thinking", thinking)  # DeepSeek-V3.1 templates read `thinking`

        def render() -> tuple[str, list[int]]:
            try:
                text = state.template.render(body.messages, tools=body.tools if use_tools else None, **kwargs)
            except TemplateError as err:
                raise ApiError(400, str(err), param="messages") from None
            return text, state.codec.encode(text, add_special_tokens=False)

        prompt, prompt_ids = await run_in_threadpool(render)
        params, stops = _sampling(state, body, len(prompt_ids))

        def make_parser() -> OutputParser:
            return OutputParser(reasoning_parser=state.reasoning_parser,
                                tool_call_parser=state.tool_call_parser if use_tools else None,
                                prompt=prompt, tools=body.tools)

        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            outcome = Outcome()
            return await _sse(_chat_stream(state, http, prompt_ids, params, stops, make_parser(), rid, created, body.model,
                                           include_usage, outcome), outcome)
        return await _chat_full(state, http, prompt_ids, params, stops, make_parser(), rid, created, body.model)

    @v1.post("/completions")
    async def completions(body: CompletionBody, http: HttpRequest):
        _check_request(state, body)
        if len(body.prompt) != 1:
            raise ApiError(400, "prompt must be a single string", param="prompt")
        prompt_ids = await run_in_threadpool(state.codec.encode, body.prompt[0], add_special_tokens=True)
        if not prompt_ids:
            raise ApiError(400, "prompt is empty", param="prompt")
        params, stops = _sampling(state, body, len(prompt_ids))
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            outcome = Outcome()
            return await _sse(_completion_stream(state, http, prompt_ids, params, stops, rid, created, body.model,
                                                 include_usage, outcome), outcome)
        text, outcome = [], Outcome()
        async for piece in _generate(state, http, prompt_ids, params, stops, outcome):
            text.append(piece)
        return {"id": rid, "object": "text_completion", "created": created, "model": body.model,
                "choices": [{"index": 0, "text": "".join(text), "logprobs": None, "finish_reason": outcome.finish_reason}],
                "usage": _usage(len(prompt_ids), outcome)}

    app.include_router(v1)
    return app


def _check_request(state: EngineState, body: Body) -> None:
    check_text(body.model_dump(exclude_none=True))
    unsupported = body.unsupported()
    if unsupported:
        raise ApiError(400, f"'{unsupported}' is not supported by the CPU engine (it returns no log probabilities "
                       "and no echo); leave it out", param=unsupported, code="unsupported_parameter")
    if body.model != state.served_model:
        raise ApiError(404, f"The model `{body.model}` does not exist; this server serves `{state.served_model}`.",
                       type="not_found_error", param="model", code="model_not_found")


def _sampling(state: EngineState, body: Body, prompt_len: int) -> tuple[SamplingParams, list[str]]:
    """Sampling parameters, or OpenAI's context-length error when the prompt (plus ``max_tokens``)
    does not fit the served max model length."""
    ctx, what = state.codec.max_context, "messages" if isinstance(body, ChatBody) else "prompt"
    room = ctx - prompt_len
    if room < 1:
        raise ApiError(400, f"This model's maximum context length is {ctx} tokens. However, your {what} resulted in "
                       f"{prompt_len} tokens. Please reduce the length of the {what}.", param=what,
                       code="context_length_exceeded")
    if body.max_tokens is not None and body.max_tokens > room:
        raise ApiError(400, f"This model's maximum context length is {ctx} tokens. However, you requested "
                       f"{prompt_len + body.max_tokens} tokens ({prompt_len} in the {what}, {body.max_tokens} in the "
                       f"completion). Please reduce the length of the {what} or completion.", param=what,
                       code="context_length_exceeded")
    max_tokens = body.max_tokens if body.max_tokens is not None else min(XLLM_DEFAULT_MAX_TOKENS, room)
    stops = list(body.stop or [])
    params = SamplingParams(max_tokens=max_tokens, temperature=body.temperature or 0.0, top_p=body.top_p,
                            top_k=body.top_k, seed=body.seed, stop_token_ids=tuple(body.stop_token_ids or ()),
                            ignore_eos=body.ignore_eos)
    return params, stops


def _usage(prompt_tokens: int, outcome: Outcome) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": outcome.completion_tokens,
            "total_tokens": prompt_tokens + outcome.completion_tokens}


async def _generate(state: EngineState, http: HttpRequest, prompt_ids: list[int], params: SamplingParams,
                    stops: list[str], outcome: Outcome) -> AsyncIterator[str]:
    """Text pieces of one generation; fills ``outcome`` at the end. Enforces the concurrency limit,
    honours stop strings, cancels the sequence when the client goes away, and gives up with 503
    when the engine turns unhealthy (a dead or stuck rank) instead of waiting forever."""
    unhealthy = state.scheduler.health()
    if unhealthy:
        raise ApiError(503, f"the engine is unhealthy: {unhealthy}", type="server_error", code="engine_unhealthy")
    if state.max_concurrent_requests and state.active >= state.max_concurrent_requests:
        raise ApiError(429, CONCURRENCY_LIMIT_MESSAGE, type="rate_limit_error", code="concurrency_limit")
    state.active += 1
    req = Request(prompt_ids, params, asyncio.get_running_loop())
    outcome.request, outcome.state = req, state
    detok, matcher = Detokenizer(state.codec), StopMatcher(stops)
    try:
        state.scheduler.submit(req)
        loop, last_check = asyncio.get_running_loop(), 0.0
        while True:
            try:
                kind, value = await asyncio.wait_for(req.queue.get(), timeout=DISCONNECT_POLL_S)
            except asyncio.TimeoutError:
                kind = value = None
            if loop.time() - last_check >= DISCONNECT_POLL_S:  # also while tokens keep coming
                last_check = loop.time()
                if await http.is_disconnected():
                    req.cancel()
                    outcome.finish_reason = "abort"
                    return
                unhealthy = state.scheduler.health() if kind is None else None
                if unhealthy:
                    req.cancel()
                    raise ApiError(503, f"request abandoned, the engine is unhealthy: {unhealthy}", type="server_error",
                                   code="engine_unhealthy")
            if kind is None:
                continue
            if kind == "token":
                outcome.completion_tokens += 1
                text, hit = matcher.feed(detok.push(value))
                if text:
                    yield text
                if hit:
                    req.cancel()
                    outcome.finish_reason = "stop"
                    return
            elif kind == "finish":
                rest = matcher.flush()
                if rest:
                    yield rest
                outcome.finish_reason = value
                return
            elif kind == "rejected":  # the runner refused the input (e.g. a token id outside the vocabulary)
                raise ApiError(400, str(value))
            else:  # "error": serving this request failed (the engine itself may still be healthy)
                unhealthy = state.scheduler.health()
                raise ApiError(503 if unhealthy else 500, str(value), type="server_error")
    finally:
        outcome.release()


async def _sse(events: AsyncIterator[dict], outcome: Outcome) -> StreamingResponse:
    """SSE response; the first event is produced before the headers go out, so errors raised
    up to the first token (429, 503, …) are still proper HTTP errors."""
    try:
        first = await events.__anext__()
    except StopAsyncIteration:
        first = None

    def fmt(event: dict) -> str:
        return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"

    async def body():
        try:
            if first is not None:
                yield fmt(first)
            async for event in events:
                yield fmt(event)
            yield "data: [DONE]\n\n"
        except ApiError as err:  # after the headers: an error event, as OpenAI's streams carry them
            yield f"data: {json.dumps(err.body())}\n\n"
        finally:
            outcome.release()  # client gone mid-stream: free the sequence now

    return StreamingResponse(body(), media_type="text/event-stream; charset=utf-8")


async def _first_or_error(gen: AsyncIterator) -> tuple[Any, AsyncIterator] | None:
    """Pull the first item before the response starts, so early errors (429, 503) stay HTTP errors."""
    try:
        return await gen.__anext__(), gen
    except StopAsyncIteration:
        return None


def _message_fields(delta: Delta) -> dict:
    out = {}
    if delta.reasoning:
        out["reasoning_content"] = delta.reasoning
    if delta.content:
        out["content"] = delta.content
    return out


async def _chat_full(state, http, prompt_ids, params, stops, parser: OutputParser, rid, created, model) -> dict:
    outcome = Outcome()
    deltas = [parser.feed(piece) async for piece in _generate(state, http, prompt_ids, params, stops, outcome)]
    deltas.append(parser.finish())
    text = "".join(d.content for d in deltas)
    calls = [call for d in deltas for call in d.tool_calls]
    message: dict[str, Any] = {"role": "assistant", "content": None if (calls and not text.strip()) else text}
    if parser.reasoning_seen:
        message["reasoning_content"] = "".join(d.reasoning for d in deltas)
    if calls:
        message["tool_calls"] = [c.to_openai() for c in calls]
    finish = "tool_calls" if calls and outcome.finish_reason == "stop" else outcome.finish_reason
    return {"id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": _usage(len(prompt_ids), outcome)}


def _chat_stream(state, http, prompt_ids, params, stops, parser: OutputParser, rid, created, model, include_usage,
                 outcome: Outcome):
    gen = _generate(state, http, prompt_ids, params, stops, outcome)
    n_calls = 0

    def chunk(delta: dict, finish=None) -> dict:
        return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    def chunks_of(d: Delta):
        nonlocal n_calls
        if _message_fields(d):
            yield chunk(_message_fields(d))
        for call in d.tool_calls:  # each call whole, in one delta (index, id, name, full arguments)
            yield chunk({"tool_calls": [call.to_openai(n_calls)]})
            n_calls += 1

    async def events():
        first = await _first_or_error(gen)  # before the first event: errors stay HTTP errors
        yield chunk({"role": "assistant", "content": ""})
        async for piece in (_prepend(first[0], gen) if first else _empty()):
            for c in chunks_of(parser.feed(piece)):
                yield c
        for c in chunks_of(parser.finish()):
            yield c
        finish = "tool_calls" if n_calls and outcome.finish_reason == "stop" else outcome.finish_reason
        yield chunk({}, finish)
        if include_usage:
            yield {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
                   "usage": _usage(len(prompt_ids), outcome)}

    return events()


def _completion_stream(state, http, prompt_ids, params, stops, rid, created, model, include_usage, outcome: Outcome):
    gen = _generate(state, http, prompt_ids, params, stops, outcome)

    def chunk(text: str, finish=None) -> dict:
        return {"id": rid, "object": "text_completion", "created": created, "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}

    async def events():
        async for piece in gen:
            yield chunk(piece)
        yield chunk("", outcome.finish_reason)
        if include_usage:
            yield {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": [],
                   "usage": _usage(len(prompt_ids), outcome)}

    return events()


async def _prepend(first, rest: AsyncIterator) -> AsyncIterator:
    yield first
    async for item in rest:
        yield item


async def _empty():
    return
    yield  # pragma: no cover
