"""The CPU engine's HTTP API, driven by the official ``openai`` client and raw HTTP.

The model is a ScriptedGenerator (scripted answers through a real byte-level tokenizer, real chat
template, real parsers and scheduler), so these tests pin the API behaviour independently of the
reference model; the e2e test in test_serve_e2e.py runs the real sharded model.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
from engine_fixtures import scripted_server, write_model_dir

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string"}, "days": {"type": "integer"}},
                                               "required": ["city"]}}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]
ANSWERS = {
    "weather": "The user wants the weather.</think>Checking.<tool_call>get_weather<arg_key>city</arg_key>"
               "<arg_value>Paris</arg_value><arg_key>days</arg_key><arg_value>3</arg_value></tool_call>",
    "time": "</think><tool_call>get_time</tool_call>",
    "sunny": "Got it.</think>It is sunny in Paris.",
    "count": "1 2 3 4 5 6 7 8 9 10",
}
DEFAULT = "A greeting.</think>Hello! How can I help you today?"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_model_dir(tmp_path_factory.mktemp("engine") / "tiny", max_context=512)


@pytest.fixture(scope="module")
def server(model_dir):
    with scripted_server(model_dir, ANSWERS | {"": DEFAULT}) as srv:
        yield srv


@pytest.fixture()
def client(server):
    url, _, _ = server
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_models_and_health(server, client):
    url, _, _ = server
    assert [m.id for m in client.models.list().data] == ["tiny"]
    raw = httpx.get(url + "/v1/models").json()
    assert "object" not in raw and raw["data"][0]["owned_by"] == "xllm"  # xLLM's shape
    assert httpx.get(url + "/health").status_code == 200


def test_chat_thinking_on_and_off(client):
    on = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])
    msg = on.choices[0].message
    assert msg.content == "Hello! How can I help you today?"
    assert msg.model_extra["reasoning_content"] == "A greeting."
    assert on.choices[0].finish_reason == "stop"
    assert on.usage.total_tokens == on.usage.prompt_tokens + on.usage.completion_tokens > 0
    off = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                         extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    # thinking off: the prompt ends with </think>, so everything the model writes is content
    assert "reasoning_content" not in off.choices[0].message.model_extra
    assert off.choices[0].message.content == DEFAULT


def test_streaming_matches_non_streaming(client):
    kwargs = dict(model="tiny", messages=[{"role": "user", "content": "hi"}])
    full = client.chat.completions.create(**kwargs).choices[0].message
    content, reasoning, finish, usage = "", "", None, None
    for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs):
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            content += choice.delta.content or ""
            reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            finish = choice.finish_reason or finish
    assert content == full.content and reasoning == full.model_extra["reasoning_content"]
    assert finish == "stop" and usage.completion_tokens > 0


def test_tool_calls(client):
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    resp = client.chat.completions.create(model="tiny", messages=msgs, tools=TOOLS)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris", "days": 3}
    # streaming: the call arrives whole, with index/id/type, and finish_reason tool_calls
    calls, finish = {}, None
    for chunk in client.chat.completions.create(model="tiny", messages=msgs, tools=TOOLS, stream=True):
        for c in chunk.choices:
            finish = c.finish_reason or finish
            for tc in c.delta.tool_calls or []:
                calls.setdefault(tc.index, {"name": "", "args": ""})
                calls[tc.index]["name"] += tc.function.name or ""
                calls[tc.index]["args"] += tc.function.arguments or ""
    assert finish == "tool_calls"
    assert calls == {0: {"name": "get_weather", "args": call.function.arguments}}
    # zero-argument tool
    zero = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "time?"}], tools=TOOLS)
    assert zero.choices[0].message.tool_calls[0].function.arguments == "{}"
    assert zero.choices[0].message.content is None
    # multi-turn with the tool result
    follow = client.chat.completions.create(model="tiny", tools=TOOLS, messages=msgs + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert follow.choices[0].message.content == "It is sunny in Paris." and follow.choices[0].finish_reason == "stop"
    # tool_choice none: no parsing, the raw text comes back
    raw = client.chat.completions.create(model="tiny", messages=msgs, tools=TOOLS, tool_choice="none")
    assert raw.choices[0].message.tool_calls is None


def test_max_tokens_stop_and_completions(client):
    short = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "count"}], max_tokens=4,
                                           extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 4
    stopped = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "count"}],
                                             stop=[" 4", "x"], extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert stopped.choices[0].message.content == "1 2 3" and stopped.choices[0].finish_reason == "stop"
    comp = client.completions.create(model="tiny", prompt="count", max_tokens=3)
    assert comp.choices[0].text == "1 2" and comp.choices[0].finish_reason == "length"
    streamed = "".join(c.choices[0].text for c in client.completions.create(model="tiny", prompt="count", max_tokens=3,
                                                                             stream=True) if c.choices)
    assert streamed == "1 2"


# 400 byte-level tokens (the test tokenizer has no merges): long enough that two independent
# samples at temperature 2 essentially never agree (see the test).
LONG_ANSWER = ("The lighthouse keeper climbed the stairs every evening and lit the lamp for the ships. " * 5)[:400]


def test_sampling_seed_is_reproducible(model_dir):
    """Same seed -> same text; another seed -> other text; temperature 0 -> the script.

    The script token's logit leads by 20 (10 at temperature 2) over 272 others, so each sampled
    token leaves the script with p = 272 / (e^10 + 272) ~ 1.2%. Two samples of 400 tokens agree
    only if neither leaves it (0.988^800 ~ 6e-5) or both leave it identically (far less likely)."""
    with scripted_server(model_dir, {"long": LONG_ANSWER}) as (url, _, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        kwargs = dict(model="tiny", messages=[{"role": "user", "content": "long"}], max_tokens=400,
                      extra_body={"chat_template_kwargs": {"enable_thinking": False}})

        def sample(seed):
            return client.chat.completions.create(seed=seed, temperature=2.0, **kwargs).choices[0].message.content

        a = sample(7)
        assert sample(7) == a
        assert sample(8) != a
        assert client.chat.completions.create(**kwargs).choices[0].message.content == LONG_ANSWER


@pytest.mark.parametrize("body,status,fragment", [
    (b"{not json", 400, "not valid JSON"),
    (json.dumps({"model": "other", "messages": [{"role": "user", "content": "hi"}]}).encode(), 404, "does not exist"),
    (json.dumps({"model": "tiny", "max_tokens": -1, "messages": [{"role": "user", "content": "hi"}]}).encode(), 400, "max_tokens"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x" * 2000}]}).encode(), 400, "maximum context length"),
    (json.dumps({"model": "tiny", "messages": []}).encode(), 400, "messages"),
    (json.dumps({"model": "tiny", "temperature": "hot", "messages": [{"role": "user", "content": "hi"}]}).encode(), 400, "temperature"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}).encode(), 400, "text content"),
])
def test_client_errors_are_4xx_json_and_server_keeps_serving(server, client, body, status, fragment):
    url, _, _ = server
    r = httpx.post(url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    assert fragment in r.json()["error"]["message"]
    assert client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}]).choices[0].message.content


def test_openai_client_raises_typed_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=100000)


def test_32_concurrent_streams(server):
    url, state, gen = server

    async def one(client: openai.AsyncOpenAI, i: int) -> str:
        text = ""
        stream = await client.chat.completions.create(model="tiny", stream=True,
                                                      messages=[{"role": "user", "content": f"hi {i}"}])
        async for chunk in stream:
            for c in chunk.choices:
                text += c.delta.content or ""
        return text

    async def run():
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client:
            return await asyncio.gather(*(one(client, i) for i in range(32)))

    results = asyncio.run(run())
    assert results == ["Hello! How can I help you today?"] * 32
    assert gen.max_batch_seen == 8  # continuous batching up to --max_seqs_per_batch
    assert state.active == 0 and not gen.sequences  # every sequence freed


def test_disconnect_cancels_and_limit_gives_429(model_dir):
    slow = {"": "word " * 200}
    with scripted_server(model_dir, slow, delay_s=0.02, flags={"max_concurrent_requests": 1}) as (url, state, gen):
        body = {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "go"}]}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=10) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            next(lines), next(lines)
            busy = httpx.post(url + "/v1/chat/completions", json=body | {"stream": False})
            assert busy.status_code == 429
            assert busy.json()["error"]["message"] == "The number of concurrent requests has reached the limit."
        deadline = time.time() + 5  # client closed the stream: the sequence must be freed promptly
        while (gen.sequences or state.active) and time.time() < deadline:
            time.sleep(0.05)
        assert not gen.sequences and state.active == 0
        assert state.scheduler.load == 0
        # a non-streaming client that gives up is noticed too, long before its 200 tokens would finish
        t0 = time.time()
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/chat/completions", json=body | {"stream": False}, timeout=0.5)
        while (gen.sequences or state.active) and time.time() - t0 < 10:
            time.sleep(0.05)
        assert not gen.sequences and state.active == 0 and time.time() - t0 < 3


def test_api_key(model_dir):
    with scripted_server(model_dir, {"": DEFAULT}, api_key="s3cret") as (url, _, _):
        assert httpx.get(url + "/v1/models").status_code == 401
        assert httpx.get(url + "/health").status_code == 200
        ok = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert ok.models.list().data[0].id == "tiny"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()


# --- issue 16 #5: every sampling field validated as OpenAI does; one request cannot break the engine
HI = [{"role": "user", "content": "hi"}]


def _still_serving(url: str, client) -> None:
    assert httpx.get(url + "/health").status_code == 200
    assert client.chat.completions.create(model="tiny", messages=HI).choices[0].message.content


@pytest.mark.parametrize("fields,param,code", [
    ({"seed": 2**64}, "seed", "integer_above_max_value"),
    ({"seed": -(2**63) - 1}, "seed", "integer_below_min_value"),
    ({"seed": 1.5}, "seed", "invalid_type"),
    ({"temperature": 2.5}, "temperature", "decimal_above_max_value"),
    ({"temperature": -0.5}, "temperature", "decimal_below_min_value"),
    ({"temperature": True}, "temperature", "invalid_type"),
    ({"temperature": "0.5"}, "temperature", "invalid_type"),
    ({"top_p": 1.5}, "top_p", "decimal_above_max_value"),
    ({"top_k": -2}, "top_k", "integer_below_min_value"),
    ({"n": 2}, "n", "integer_above_max_value"),
    ({"max_tokens": 0}, "max_tokens", "integer_below_min_value"),
    ({"max_tokens": 1.5}, "max_tokens", "invalid_type"),
    ({"presence_penalty": 2.5}, "presence_penalty", "decimal_above_max_value"),
    ({"frequency_penalty": -2.5}, "frequency_penalty", "decimal_below_min_value"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "array_above_max_length"),
    ({"stop": 5}, "stop", "invalid_type"),
    ({"stream": "yes"}, "stream", "invalid_type"),
])
def test_bad_sampling_fields_get_openai_errors(server, client, fields, param, code):
    url, _, _ = server
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="tiny", messages=HI, extra_body=fields)
    assert exc.value.status_code == 400
    assert set(exc.value.body) == {"message", "type", "param", "code"}  # the client unwraps {"error": {...}}
    assert (exc.value.type, exc.value.param, exc.value.code) == ("invalid_request_error", param, code)
    assert param in exc.value.message
    _still_serving(url, client)


@pytest.mark.parametrize("route,body,param", [
    ("chat/completions", '{"model": "tiny", "messages": [{"role": "user", "content": "a\\ud800b"}]}',
     "messages[0].content"),
    ("completions", '{"model": "tiny", "prompt": "x\\udfff"}', "prompt[0]"),
    ("chat/completions", '{"model": "ti\\ud800ny", "messages": [{"role": "user", "content": "hi"}]}', "model"),
    ("chat/completions", '{"model": "tiny", "temperature": NaN, "messages": [{"role": "user", "content": "hi"}]}',
     "temperature"),
])
def test_unencodable_text_and_nan_get_400_json(server, client, route, body, param):
    url, _, _ = server
    r = httpx.post(f"{url}/v1/{route}", content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error"
    _still_serving(url, client)


def test_output_the_engine_cannot_give_is_refused_not_dropped(server, client):
    """logprobs and echo: a 400 naming the field, never a reply whose logprobs are silently null."""
    asks = [(client.chat.completions.create, dict(messages=HI, logprobs=True), "logprobs"),
            (client.chat.completions.create, dict(messages=HI, top_logprobs=2), "top_logprobs"),
            (client.completions.create, dict(prompt="hi", logprobs=2), "logprobs"),
            (client.completions.create, dict(prompt="hi", echo=True), "echo")]
    for create, kwargs, param in asks:
        with pytest.raises(openai.BadRequestError) as exc:
            create(model="tiny", max_tokens=2, **kwargs)
        assert (exc.value.param, exc.value.code) == (param, "unsupported_parameter")
    assert client.chat.completions.create(model="tiny", messages=HI, max_tokens=2, logprobs=False).choices
    _still_serving(server[0], client)


def test_a_body_not_sent_as_json_gets_a_json_400(server, client):
    r = httpx.post(f"{server[0]}/v1/chat/completions", content=b"hi", headers={"content-type": "text/plain"})
    assert r.status_code == 400 and "Content-Type: application/json" in r.json()["error"]["message"]


def test_tiny_temperature_is_greedy(server, client):
    kwargs = dict(model="tiny", messages=[{"role": "user", "content": "count"}], max_tokens=12,
                  extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    greedy = client.chat.completions.create(**kwargs).choices[0].message.content
    for t in (1e-40, 5e-324, 1e-6):
        assert client.chat.completions.create(temperature=t, **kwargs).choices[0].message.content == greedy
    _still_serving(server[0], client)


# --- issue 16 #6: big bodies never block the event loop; the served max model length is enforced
BODY_LIMIT = 256 << 10  # the engine's documented limit for a 512-token model: max(256 KiB, 32 B per token)


def test_body_over_the_limit_gets_413_at_once(server, client):
    url, _, _ = server
    big = json.dumps({"model": "tiny", "prompt": "x" * (BODY_LIMIT + 1)}).encode()
    t0 = time.monotonic()
    r = httpx.post(url + "/v1/completions", content=big, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large", r.text
    assert time.monotonic() - t0 < 5  # refused before tokenizing

    def chunked():  # no Content-Length: counted while read
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    r = httpx.post(url + "/v1/completions", content=chunked(), headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"
    _still_serving(url, client)


POLL_HEALTH = """
import sys, time, httpx
url, seconds, worst = sys.argv[1], float(sys.argv[2]), 0.0
with httpx.Client() as http:
    print("ready", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        assert http.get(url + "/health", timeout=120).status_code == 200
        worst = max(worst, time.monotonic() - t)
        time.sleep(0.05)
print(worst)
"""


def test_long_prompt_is_tokenized_off_the_event_loop(server, client):
    """/health is timed from another process (the server shares this one's GIL)."""
    import subprocess
    import sys

    url, state, _ = server
    text = "hello world, " * (BODY_LIMIT // 14)  # just under the body limit
    t0 = time.monotonic()
    state.codec.tokenizer.encode(text)
    encode_s = time.monotonic() - t0
    poller = subprocess.Popen([sys.executable, "-c", POLL_HEALTH, url, str(encode_s + 3)], stdout=subprocess.PIPE,
                              text=True)
    assert poller.stdout.readline().strip() == "ready"
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model="tiny", prompt=text, max_tokens=1)
    worst = float(poller.communicate(timeout=120)[0])
    assert exc.value.code == "context_length_exceeded" and exc.value.param == "prompt"
    assert "maximum context length is 512 tokens" in exc.value.body["message"]
    assert worst < max(0.5, encode_s / 4), (worst, encode_s)  # /health never waited for the tokenizer


def test_served_max_model_len_is_enforced(model_dir):
    with scripted_server(model_dir, {"": DEFAULT}, max_model_len=64) as (url, state, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        assert client.completions.create(model="tiny", prompt="y" * 40, max_tokens=10).choices[0].text
        with pytest.raises(openai.BadRequestError) as exc:
            client.completions.create(model="tiny", prompt="y" * 70, max_tokens=1)
        assert exc.value.code == "context_length_exceeded" and exc.value.param == "prompt"
        assert exc.value.body["message"].startswith("This model's maximum context length is 64 tokens. However, "
                                                    "your prompt resulted in 70 tokens.")
        with pytest.raises(openai.BadRequestError) as exc:
            client.chat.completions.create(model="tiny", messages=HI, max_tokens=60)
        assert exc.value.code == "context_length_exceeded" and exc.value.param == "messages"
        assert "in the messages, 60 in the completion" in exc.value.message
    with scripted_server(model_dir, {"": DEFAULT}, max_model_len=100000) as (url, state, _):
        assert state.codec.max_context == 512  # capped at the model's max_position_embeddings


# --- issue 16 #7: a stuck step turns /health 503, and requests end with a clear error, not a hang
def test_stuck_step_makes_health_503_and_requests_fail_fast(model_dir):
    import threading

    with scripted_server(model_dir, {"": DEFAULT}, delay_s=0.05) as (url, state, gen):
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=20)
        state.scheduler.step_timeout_s = 1.0
        stuck, release, forward = threading.Event(), threading.Event(), gen.forward

        def forward_or_hang(seq_ids, token_lists):  # a rank that stops answering, until released
            if stuck.is_set():
                release.wait(30)
            return forward(seq_ids, token_lists)

        gen.forward = forward_or_hang
        try:
            chunks = iter(client.chat.completions.create(model="tiny", messages=HI, stream=True))
            next(chunks)
            stuck.set()
            t0 = time.monotonic()
            with pytest.raises(openai.APIError, match="stuck"):  # an error event ends the started stream
                for _ in chunks:
                    pass
            with pytest.raises(openai.InternalServerError) as exc:
                client.chat.completions.create(model="tiny", messages=HI)
            assert exc.value.status_code == 503 and time.monotonic() - t0 < 10
            assert "a model step has been running" in exc.value.message
            health = httpx.get(url + "/health")
            assert health.status_code == 503 and "stuck" in health.json()["reason"]
        finally:
            release.set()
        deadline = time.monotonic() + 10
        while httpx.get(url + "/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        stuck.clear()
        _still_serving(url, client)  # the step finished: healthy again
