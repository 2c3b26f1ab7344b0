"""Tokenizer of a checkpoint (``tokenizer.json`` via the ``tokenizers`` library) and incremental
detokenization."""

from __future__ import annotations

import json
from pathlib import Path

from ascend.errors import CheckpointError


class TextCodec:
    """``max_context``: the served max model length (prompt + completion), at most the model's
    ``max_position_embeddings``."""

    def __init__(self, tokenizer, eos_ids: set[int], max_context: int):
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.max_context = max_context

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> "TextCodec":
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"{path}: missing", fix="copy tokenizer.json from the source checkpoint")
        tok = Tokenizer.from_file(str(path))
        eos: set[int] = set()
        for name in ("generation_config.json", "config.json"):
            cfg_path = model_dir / name
            if cfg_path.is_file():
                value = json.loads(cfg_path.read_text()).get("eos_token_id")
                if value is not None:
                    eos.update(value if isinstance(value, list) else [value])
        tcfg = model_dir / "tokenizer_config.json"
        if tcfg.is_file():
            eos_tok = json.loads(tcfg.read_text()).get("eos_token")
            eos_tok = eos_tok.get("content") if isinstance(eos_tok, dict) else eos_tok
            if eos_tok and tok.token_to_id(eos_tok) is not None:
                eos.add(tok.token_to_id(eos_tok))
        config = json.loads((model_dir / "config.json").read_text()) if (model_dir / "config.json").is_file() else {}
        max_context = int(config.get("max_position_embeddings") or 4096)
        return cls(tok, eos, max_context)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        # encode_batch releases the GIL (encode does not): a long prompt tokenized in a worker
        # thread then leaves the event loop free
        return self.tokenizer.encode_batch([text], add_special_tokens=add_special_tokens)[0].ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)


class Detokenizer:
    """Text of a growing token list; ``push(token) -> new text`` (held back while a UTF-8
    character is incomplete)."""

    def __init__(self, codec: TextCodec):
        self.codec = codec
        self.ids: list[int] = []
        self.text = ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        full = self.codec.decode(self.ids)
        if full.endswith("\ufffd") or not full.startswith(self.text):
            return ""  # incomplete character (or a re-segmentation): wait for more tokens
        new, self.text = full[len(self.text):], full
        return new
