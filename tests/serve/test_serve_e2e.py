"""`ascend serve` end to end: a 2-rank CPU-engine deployment (attention TP2, experts EP2) of a tiny
GLM-5 checkpoint, driven with the official `openai` client; then a clean Ctrl-C shutdown, and a
killed rank.

The checkpoint is the scripted one (constructed weights with known behaviour,
ascend.tiny.scripted) so tool calls and thinking are asserted on real model output. If it
cannot be built, the tests fail: there is no fallback to random weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from engine_fixtures import free_port, listening_addresses

pytestmark = pytest.mark.slow
from ascend.tiny import scripted  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return scripted.write_scripted_checkpoint(tmp_path_factory.mktemp("e2e") / "scripted", fp8=False, check=False)


def _recipe(tmp: Path, checkpoint: Path) -> Path:
    port, master = free_port(), free_port()
    text = f"""
name: e2e-tiny-glm5
model: {{family: glm_moe_dsa, source: local, path: {checkpoint}}}
hardware: {{chip: cpu, nodes: 1, devices_per_node: 2}}
parallel: {{dp: 1, ep: 2}}
convert: {{output: {checkpoint}, layout: hf, mtp: keep}}
serve:
  engine: cpu
  version: "0.10"
  port: {port}
  master_port: {master}
  max_seqs: 8
  max_tokens_per_batch: 512
  tool_call_parser: glm5
  reasoning_parser: glm5
  startup_timeout_s: 150
  extra_args: ["--health_check_interval_ms=1000"]  # a silent rank shows in /health after 5 s
"""
    path = tmp / "recipe.yaml"
    path.write_text(text)
    return path


class Launched:
    def __init__(self, recipe: Path, log_dir: Path):
        self.log_dir = log_dir
        self.proc = subprocess.Popen([sys.executable, "-m", "ascend", "serve", str(recipe), "--log-dir", str(log_dir)],
                                     stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.lines: list[str] = []
        self.url = self.model = None
        self.pids: dict[int, int] = {}
        deadline = time.time() + 200
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            if line.startswith("started ranks"):
                for part in line.split("ranks ", 1)[1].split(" on node")[0].split(", "):
                    rank, pid = part.split(" (pid ")
                    self.pids[int(rank)] = int(pid.rstrip(")"))
            if line.startswith("ready: "):
                self.url = line.split()[1]
                self.model = line.split("model=")[1].split()[0]
                return
        raise AssertionError("ascend serve did not become ready:\n" + "".join(self.lines) + self._logs())

    def _logs(self) -> str:
        return "".join(f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.log_dir.glob("*.log")))

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, "".join(self.lines) + err

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def service(tmp_path_factory, checkpoint):
    tmp = tmp_path_factory.mktemp("serve")
    launched = Launched(_recipe(tmp, checkpoint), tmp / "logs")
    try:
        yield launched
    finally:
        launched.kill()


def _conv(name: str):
    return next(c for c in scripted.default_conversations() if c.name == name)


def _ask(client, conv, **kw):
    return client.chat.completions.create(
        model=CLIENT_MODEL[0], messages=conv.messages, tools=conv.tools or openai.NOT_GIVEN, max_tokens=64,
        temperature=0, extra_body={"chat_template_kwargs": {"enable_thinking": conv.thinking}}, **kw)


CLIENT_MODEL = [""]


@pytest.fixture()
def client(service):
    CLIENT_MODEL[0] = service.model
    return openai.OpenAI(base_url=service.url, api_key="none", max_retries=0)


def test_models_and_health(service, client):
    assert [m.id for m in client.models.list().data] == [service.model]
    assert httpx.get(service.url.removesuffix("/v1") + "/health", trust_env=False).status_code == 200
    assert "Brpc Server started on port" in (service.log_dir / "rank-0.log").read_text()


def test_thinking_switch_and_usage(client):
    """Holds for any weights: thinking off puts everything in content, on opens reasoning."""
    off = _ask(client, _conv("plain"))
    assert "reasoning_content" not in off.choices[0].message.model_extra
    assert off.choices[0].finish_reason in ("stop", "length")
    assert off.usage.total_tokens == off.usage.prompt_tokens + off.usage.completion_tokens
    on = _ask(client, _conv("plain-thinking")).choices[0]
    assert "reasoning_content" in on.message.model_extra
    tools = _ask(client, _conv("weather"))
    assert tools.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_chat_thinking_off_and_on(client):
    off = _ask(client, _conv("plain")).choices[0]
    assert off.message.content and "reasoning_content" not in off.message.model_extra
    assert off.finish_reason == "stop"
    on = _ask(client, _conv("plain-thinking")).choices[0]
    assert on.message.content and on.message.model_extra.get("reasoning_content")
    assert on.message.content == off.message.content  # same answer, reasoning split off


def test_streaming_equals_non_streaming(client):
    conv = _conv("plain-thinking")
    full = _ask(client, conv).choices[0].message
    content = reasoning = ""
    for chunk in _ask(client, conv, stream=True):
        for c in chunk.choices:
            content += c.delta.content or ""
            reasoning += (c.delta.model_extra or {}).get("reasoning_content") or ""
    assert (content, reasoning) == (full.content or "", full.model_extra["reasoning_content"])


def test_tools(client):
    weather = _ask(client, _conv("weather")).choices[0]
    assert weather.finish_reason == "tool_calls"
    call = weather.message.tool_calls[0]
    assert call.function.name == scripted.WEATHER_TOOL_NAME and json.loads(call.function.arguments) == {"city": "Paris"}
    clock = _ask(client, _conv("clock")).choices[0]
    assert clock.message.tool_calls[0].function.name == scripted.TIME_TOOL_NAME
    assert json.loads(clock.message.tool_calls[0].function.arguments) == {}
    after = _ask(client, _conv("after-tool")).choices[0]
    assert after.finish_reason == "stop" and after.message.content and not after.message.tool_calls
    streamed = [tc for chunk in _ask(client, _conv("weather"), stream=True) for c in chunk.choices
                for tc in (c.delta.tool_calls or [])]
    assert [(t.function.name, json.loads(t.function.arguments)) for t in streamed] == \
        [(scripted.WEATHER_TOOL_NAME, {"city": "Paris"})]


def test_rendezvous_store_listens_on_the_master_address_only(service):
    """Single node: the gloo store (served by rank 0, unauthenticated) is not reachable from other hosts."""
    argv = Path(f"/proc/{service.pids[0]}/cmdline").read_text().split("\0")
    master = next(a for a in argv if a.startswith("--master_node_addr=")).split("=", 1)[1]
    assert master.startswith("127.0.0.1:")
    assert listening_addresses(int(master.rpartition(":")[2])) == ["0100007F"]  # 127.0.0.1 only, not 0.0.0.0 or ::


def test_stuck_rank_turns_health_503_and_requests_fail_fast(service, client):
    """A rank that stops answering (SIGSTOP): /health says so, requests end with 503 instead of
    hanging; when the rank resumes, the service is healthy again."""
    health = service.url.removesuffix("/v1") + "/health"
    os.kill(service.pids[1], signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(openai.InternalServerError) as exc:
            openai.OpenAI(base_url=service.url, api_key="none", max_retries=0, timeout=60).chat.completions.create(
                model=service.model, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert exc.value.status_code == 503 and time.monotonic() - t0 < 30
        assert "rank 1 has sent no heartbeat" in exc.value.body["message"]
        r = httpx.get(health, trust_env=False)
        assert r.status_code == 503 and "rank 1" in r.json()["reason"]
    finally:
        os.kill(service.pids[1], signal.SIGCONT)
    deadline = time.monotonic() + 30
    while httpx.get(health, trust_env=False).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert httpx.get(health, trust_env=False).status_code == 200
    assert client.chat.completions.create(model=service.model, messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=4).choices[0].finish_reason in ("stop", "length")


def test_ctrl_c_stops_all_ranks(service):
    """Rank 1 is kept from running (SIGSTOP) while Ctrl-C stops the service, as a loaded machine
    may: it must still exit on its own with 0, not be cut short by the launcher's SIGTERM."""
    os.kill(service.pids[1], signal.SIGSTOP)
    service.proc.send_signal(signal.SIGINT)
    time.sleep(3)  # rank 0 has shut down (or waits for rank 1's acknowledgement)
    os.kill(service.pids[1], signal.SIGCONT)
    code, err = service.finish()
    assert code == 0, err
    assert "stopped: exit codes {0: 0, 1: 0}" in err, err
    for pid in service.pids.values():
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_killed_rank_brings_the_launcher_down(tmp_path, checkpoint):
    launched = Launched(_recipe(tmp_path, checkpoint), tmp_path / "logs")
    try:
        os.kill(launched.pids[1], signal.SIGKILL)
        code, err = launched.finish()
    finally:
        launched.kill()
    assert code == 2, err
    assert f"rank 1 exited with code {-signal.SIGKILL}" in err
    assert "last lines of" in err and "  | " in err
    assert not Path(f"/proc/{launched.pids[0]}").exists() or "zombie" in Path(f"/proc/{launched.pids[0]}/status").read_text().lower()
