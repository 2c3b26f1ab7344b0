"""A weight-free model directory (real byte-level tokenizer, GLM-style chat template) and an
in-process CPU-engine server driven by a ScriptedGenerator, for HTTP-level tests."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

SPECIALS = ["<|endoftext|>", "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
            "<think>", "</think>", "<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>",
            "</arg_value>", "<tool_response>", "</tool_response>"]

# GLM-4.7/GLM-5 prompt format, written here for tests (thinking on: prompt ends with <think>).
GLM_TEMPLATE = (
    "[gMASK]<sop>"
    "{% if tools %}<|system|>\n# Tools\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'system' %}<|system|>{{ m.content }}"
    "{% elif m.role == 'user' %}<|user|>{{ m.content }}"
    "{% elif m.role == 'assistant' %}<|assistant|></think>{{ m.content or '' }}"
    "{% for tc in m.tool_calls or [] %}<tool_call>{{ tc.function.name }}"
    "{% for k, v in tc.function.arguments.items() %}<arg_key>{{ k }}</arg_key><arg_value>"
    "{{ v if v is string else v | tojson }}</arg_value>{% endfor %}</tool_call>{% endfor %}"
    "{% elif m.role == 'tool' %}<|observation|><tool_response>{{ m.content }}</tool_response>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>"
    "{{ '</think>' if (enable_thinking is defined and not enable_thinking) else '<think>' }}{% endif %}"
)


def write_model_dir(path: Path, *, max_context: int = 512, template: str = GLM_TEMPLATE) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    tok.save(str(path / "tokenizer.json"))
    eos = tok.token_to_id("<|endoftext|>")
    (path / "tokenizer_config.json").write_text(json.dumps({"chat_template": template, "eos_token": "<|endoftext|>"}))
    (path / "config.json").write_text(json.dumps({"model_type": "glm_moe_dsa", "max_position_embeddings": max_context,
                                                  "eos_token_id": [eos, tok.token_to_id("<|user|>")]}))
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos, tok.token_to_id("<|user|>")]}))
    return path


def free_port() -> int:
    """A free port on 127.0.0.1 below the kernel's ephemeral range: a port the kernel hands out
    (bind to 0) can be taken again by any outgoing connection — the ranks' own gloo and store
    connections included — before the server binds it."""
    range_file = Path("/proc/sys/net/ipv4/ip_local_port_range")
    first_ephemeral = int(range_file.read_text().split()[0]) if range_file.is_file() else 32768
    for _ in range(200):
        port = random.randrange(20000, max(20001, first_ephemeral))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port: int) -> list[str]:
    """Local addresses of the LISTEN sockets on ``port``, hex as /proc/net/tcp{,6} write them
    (127.0.0.1 is ``0100007F``; every interface ``00000000`` or ``000…0`` for IPv6)."""
    out = []
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rpartition(":")[2], 16) == port:  # 0A: LISTEN
                out.append(local.rpartition(":")[0])
    return out


def script_by_prompt(tokenizer: Tokenizer, answers: dict[str, str], default: str = "Hello there."):
    """Answer with ``answers[key]`` when ``key`` occurs in the last turn of the decoded prompt
    (after the last ``<|user|>`` / ``<|observation|>``), else ``default``."""
    def script(prompt_ids: list[int]) -> list[int]:
        prompt = tokenizer.decode(prompt_ids, skip_special_tokens=False)
        prompt = prompt[max(0, prompt.rfind("<|user|>"), prompt.rfind("<|observation|>")):]
        for key, text in answers.items():
            if key in prompt:
                return tokenizer.encode(text, add_special_tokens=False).ids
        return tokenizer.encode(default, add_special_tokens=False).ids
    return script


@contextmanager
def scripted_server(model_dir: Path, answers: dict[str, str], *, flags: dict | None = None, delay_s: float = 0.0,
                    api_key: str | None = None, max_model_len: int | None = None):
    """Yield ``(base_url, state, generator)`` of a CPU-engine server on 127.0.0.1; always stopped.
    ``max_model_len``: what the engine's ASCEND_XLLM_CPU_MAX_MODEL_LEN would give."""
    from ascend.serve.cpu_engine.flags import parse_flags
    from ascend.serve.cpu_engine.generator import ScriptedGenerator
    from ascend.serve.cpu_engine.main import build_state, make_server

    port = free_port()
    argv = [f"--model={model_dir}", f"--port={port}", "--model_id=tiny", "--reasoning_parser=glm5",
            "--tool_call_parser=glm5", "--max_seqs_per_batch=8"]
    argv += [f"--{k}={v}" for k, v in (flags or {}).items()]
    parsed = parse_flags(argv)
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    gen = ScriptedGenerator(tok.get_vocab_size(), tok.token_to_id("<|endoftext|>"), script_by_prompt(tok, answers),
                            delay_s=delay_s)
    state = build_state(gen, parsed, api_key=api_key, max_model_len=max_model_len)
    server = make_server(state, host="127.0.0.1", port=port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 20
        while not server.started:
            if time.time() > deadline or not thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}", state, gen
    finally:
        server.should_exit = True
        thread.join(timeout=15)
