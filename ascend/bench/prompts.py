"""What the benchmark sends: random-token prompts of a known length (built with the model's
tokenizer and chat template) or the prompts of a JSONL dataset file."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ascend.errors import AscendError


class BenchError(AscendError):
    """The benchmark cannot run as asked (bad dataset, no tokenizer, unreachable endpoint)."""


@dataclass(frozen=True)
class Prompt:
    """One request: ``messages`` (chat API) or ``prompt`` (completions API), its length in tokens
    as the client counts it (chat template included; None without a tokenizer) and ``max_tokens``."""

    payload: dict[str, Any]
    input_tokens: int | None
    max_tokens: int


class TokenizerKit:
    """A checkpoint's ``tokenizer.json`` (the ``tokenizers`` library) and, when the directory has
    one, its chat template (``ascend.chat``): the prompt text the server will tokenize."""

    def __init__(self, model_dir: str | Path):
        from tokenizers import Tokenizer

        from ascend.chat import ChatTemplate

        path = Path(model_dir) / "tokenizer.json"
        if not path.is_file():
            raise BenchError(f"{path}: no tokenizer.json", fix="pass --tokenizer DIR with the checkpoint's tokenizer.json")
        self.tok = Tokenizer.from_file(str(path))
        try:
            self.template: Any = ChatTemplate.from_model_dir(model_dir)
        except AscendError:
            self.template = None  # plain text prompts are counted as they are
        special = set(self.tok.get_added_tokens_decoder())  # ids of special and added tokens
        self.plain_ids = [i for i in range(self.tok.get_vocab_size()) if i not in special]

    def count(self, text: str) -> int:
        return len(self.tok.encode(text, add_special_tokens=False).ids)

    def render(self, messages: list[dict]) -> str:
        """The chat prompt as text (the messages joined when there is no template)."""
        if self.template is None:
            return "\n".join(str(m.get("content") or "") for m in messages)
        return self.template.render(messages, add_generation_prompt=True)

    def random_text(self, n: int, rng: random.Random) -> str:
        """Text of exactly ``n`` tokens where the tokenizer allows (decode -> re-encode can merge
        or split tokens, so a few rounds trim or extend it)."""
        ids = [rng.choice(self.plain_ids) for _ in range(n)]
        text = ""
        for _ in range(8):
            text = self.tok.decode(ids)
            ids = self.tok.encode(text, add_special_tokens=False).ids
            if len(ids) == n:
                break
            ids = ids[:n] + [rng.choice(self.plain_ids) for _ in range(n - len(ids))]
        return text


def random_prompts(kit: TokenizerKit, n: int, input_len: int, output_len: int, *, api: str, lengths: str,
                   range_ratio: float, seed: int) -> list[Prompt]:
    """``n`` prompts of random tokens; ``input_len`` counts the chat template's own tokens too."""
    rng = random.Random(seed)
    overhead = kit.count(kit.render([{"role": "user", "content": ""}])) if api == "chat" else 0

    def draw(length: int) -> int:
        if lengths == "fixed":
            return length
        return rng.randint(max(1, round(length * (1 - range_ratio))), max(1, round(length * (1 + range_ratio))))

    out = []
    for _ in range(n):
        want_in, want_out = draw(input_len), draw(output_len)
        text = kit.random_text(max(1, want_in - overhead), rng)
        if api == "chat":
            messages = [{"role": "user", "content": text}]
            out.append(Prompt({"messages": messages}, kit.count(kit.render(messages)), want_out))
        else:
            out.append(Prompt({"prompt": text}, kit.count(text), want_out))
    return out


def load_dataset(path: str | Path, *, api: str, kit: TokenizerKit | None, output_len: int) -> list[Prompt]:
    """The prompts of a JSONL file: each line ``{"prompt": str}`` or ``{"messages": [...]}``, with an
    optional ``max_tokens``. A bad line raises one error naming the file and the line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise BenchError(f"bench dataset {path}: cannot read it ({getattr(err, 'strerror', None) or err})",
                         fix="check bench.dataset / --dataset") from None
    fix = 'each line must be a JSON object with "prompt" (text) or "messages" (a list of chat messages), optionally "max_tokens"'
    prompts = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"bench dataset {path}, line {no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise BenchError(f"{where}: not JSON ({err.msg})", fix=fix) from None
        if not isinstance(row, dict) or ("prompt" in row) == ("messages" in row):
            raise BenchError(f"{where}: needs exactly one of \"prompt\" or \"messages\"", fix=fix)
        messages, text = row.get("messages"), row.get("prompt")
        if messages is not None and not (
            isinstance(messages, list) and messages
            and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
        ):
            raise BenchError(f"{where}: \"messages\" must be a non-empty list of objects with a \"role\"", fix=fix)
        if text is not None and not (isinstance(text, str) and text):
            raise BenchError(f"{where}: \"prompt\" must be a non-empty string", fix=fix)
        max_tokens = row.get("max_tokens", output_len)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise BenchError(f"{where}: \"max_tokens\" must be a positive integer", fix=fix)
        prompts.append(_dataset_prompt(messages, text, api, kit, max_tokens))
    if not prompts:
        raise BenchError(f"bench dataset {path}: no prompts (the file is empty)", fix=fix)
    return prompts


def _dataset_prompt(messages: list | None, text: str | None, api: str, kit: TokenizerKit | None, max_tokens: int) -> Prompt:
    if api == "chat":
        messages = messages or [{"role": "user", "content": text}]
        return Prompt({"messages": messages}, kit.count(kit.render(messages)) if kit else None, max_tokens)
    if text is None:  # chat rows sent to /v1/completions: rendered with the model's template
        if kit is None or kit.template is None:
            raise BenchError("bench dataset has \"messages\" rows but api is completions and no chat template is known",
                             fix="pass --tokenizer DIR (with tokenizer_config.json) or use --api chat")
        text = kit.render(messages)
    return Prompt({"prompt": text}, kit.count(text) if kit else None, max_tokens)
