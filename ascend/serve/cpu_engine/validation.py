"""Request bodies of the CPU engine and how bad ones are refused: OpenAI's error JSON
(``{"error": {"message", "type", "param", "code"}}``) with OpenAI's wording and codes for
wrong types and out-of-range values, a lone UTF-16 surrogate refused before it reaches the
tokenizer, and a body-size limit (413) applied before the body is parsed.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.responses import JSONResponse

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # OpenAI's range for `seed`
INT32_MAX = 2**31 - 1  # xLLM's request fields are int32


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return AsciiJSONResponse(status_code=self.status, content=self.body())


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: an error message that quotes the request (even a lone
    surrogate) always encodes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value  # OpenAI: a string or an array of strings


Decimal = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Int = Annotated[int, Field(strict=True)]
Bool = Annotated[bool, Field(strict=True)]
StrList = Annotated[list[Annotated[str, Field(strict=True)]], BeforeValidator(_as_list)]


class Body(BaseModel):
    """Fields of both routes. Ranges are OpenAI's; ``top_k``, ``stop_token_ids`` and
    ``ignore_eos`` are xLLM's extensions. Unknown fields are dropped, as xLLM does."""

    model_config = ConfigDict(extra="ignore")

    model: Annotated[str, Field(strict=True)]
    temperature: Annotated[Decimal, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[Decimal, Field(ge=0.0, le=1.0)] = 1.0
    top_k: Annotated[Int, Field(ge=-1, le=INT32_MAX)] = -1
    max_tokens: Annotated[Int, Field(ge=1)] | None = None
    n: Annotated[Int, Field(ge=1, le=1)] = 1
    presence_penalty: Annotated[Decimal, Field(ge=-2.0, le=2.0)] | None = None  # accepted, not applied
    frequency_penalty: Annotated[Decimal, Field(ge=-2.0, le=2.0)] | None = None  # accepted, not applied
    seed: Annotated[Int, Field(ge=INT64_MIN, le=INT64_MAX)] | None = None
    stream: Bool = False
    stream_options: dict | None = None
    stop: Annotated[StrList, Field(max_length=4)] | None = None
    stop_token_ids: list[Annotated[Int, Field(ge=0, le=INT32_MAX)]] | None = None
    ignore_eos: Bool = False

    def unsupported(self) -> str | None:
        """A field asking for output this engine does not produce (refused, never silently dropped)."""
        return None


class ChatBody(Body):
    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    logprobs: Bool = False
    top_logprobs: Annotated[Int, Field(ge=0, le=20)] | None = None

    def unsupported(self) -> str | None:
        return "logprobs" if self.logprobs else "top_logprobs" if self.top_logprobs else None


class CompletionBody(Body):
    prompt: Annotated[StrList, Field(min_length=1)]
    logprobs: Annotated[Int, Field(ge=0, le=5)] | None = None
    echo: Bool = False

    def unsupported(self) -> str | None:
        return "logprobs" if self.logprobs else "echo" if self.echo else None


# --- pydantic errors in OpenAI's words -----------------------------------------------------------
_EXPECTED = {"float": "a decimal", "int": "an integer", "bool": "a boolean", "string": "a string", "list": "an array",
             "dict": "an object", "model": "an object"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _param(loc: tuple) -> str:
    """``messages[0].content`` from pydantic's loc (without ``body`` and union member tags)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "body" and not any(c in part for c in "[],") and part not in ("str", "int", "float", "bool"):
            out += f".{part}" if out else part
    return out


def validation_error(errors: list[dict]) -> ApiError:
    """The one error OpenAI would report for these pydantic errors (range and length errors
    before type errors: in a union, the type errors are the other members')."""
    if not errors:
        return ApiError(400, "invalid request body")
    err = min(errors, key=lambda e: e["type"].endswith("_type"))
    kind, ctx, value, param = err["type"], err.get("ctx") or {}, err.get("input"), _param(tuple(err.get("loc", ())))
    if kind == "json_invalid":
        return ApiError(400, f"request body is not valid JSON: {ctx.get('error', '')}".strip())
    if not param and isinstance(value, (bytes, str)):  # a body not sent as JSON (another Content-Type)
        return ApiError(400, "request body is not JSON: send a JSON object with Content-Type: application/json")
    if kind == "missing":
        return ApiError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    if kind.endswith(("_type", "_parsing")) or kind == "int_from_float":
        expected = _EXPECTED.get(kind.split("_")[0], "another type")
        return ApiError(400, f"Invalid type for '{param}': expected {expected}, but got {_kind(value)} instead.",
                        param=param, code="invalid_type")
    bounds = {"greater_than_equal": ("below", "minimum", ">=", "ge"), "greater_than": ("below", "minimum", ">", "gt"),
              "less_than_equal": ("above", "maximum", "<=", "le"), "less_than": ("above", "maximum", "<", "lt")}
    if kind in bounds:
        side, limit, op, key = bounds[kind]
        number = "integer" if isinstance(value, int) else "decimal"
        return ApiError(400, f"Invalid '{param}': {number} {side} {limit} value. Expected a value {op} {ctx[key]}, but "
                        f"got {value} instead.", param=param, code=f"{number}_{side}_{limit[:3]}_value")
    if kind == "too_long":
        return ApiError(400, f"Invalid '{param}': array too long. Expected an array with maximum length "
                        f"{ctx['max_length']}, but got an array with length {ctx['actual_length']} instead.",
                        param=param, code="array_above_max_length")
    if kind == "too_short":
        return ApiError(400, f"Invalid '{param}': empty array. Expected an array with minimum length "
                        f"{ctx['min_length']}, but got an empty array instead.", param=param, code="empty_array")
    return ApiError(400, f"Invalid '{param}': {err.get('msg', 'invalid value')}.", param=param or None,
                    code="invalid_value")


def check_text(value: Any, param: str = "") -> None:
    """Refuse a string anywhere in ``value`` that is not valid Unicode (a lone UTF-16 surrogate
    such as ``"\\ud800"`` is valid JSON, but no tokenizer can take it)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ApiError(400, f"Invalid '{param}': the string holds a lone UTF-16 surrogate "
                           f"({value[err.start]!r} at character {err.start}), which is not valid Unicode.",
                           param=param or None, code="invalid_value") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, param)
            check_text(item, f"{param}.{key}" if param else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_text(item, f"{param}[{i}]")


# --- body size -----------------------------------------------------------------------------------
class BodyLimit:
    """ASGI middleware: a request body above ``limit_bytes`` gets 413 before it is parsed (by its
    Content-Length, or while a chunked body is read). A plain ASGI wrapper, so the handlers still
    see client disconnects."""

    def __init__(self, app, limit_bytes: int):
        self.app, self.limit = app, limit_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            return await self._too_large(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:  # read the body here (at most the limit), then replay it to the app
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay([message], receive), send)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                return await self._too_large(scope, receive, send)
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    async def _too_large(self, scope, receive, send):
        err = ApiError(413, f"The request body is larger than this server's limit of {self.limit} bytes.",
                       code="request_too_large")
        await err.response()(scope, receive, send)


def _replay(messages: list[dict], receive):
    async def replay():
        return messages.pop(0) if messages else await receive()
    return replay
