from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_sse_server import FakeServer  # noqa: E402


@pytest.fixture
def fake_server():
    """``fake_server(**options)`` -> a started FakeServer, stopped after the test."""
    servers = []

    def start(**kw) -> FakeServer:
        s = FakeServer(**kw).__enter__()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.__exit__(None, None, None)


@pytest.fixture
def word_tokenizer(tmp_path):
    """A tokenizer directory whose tokenizer.json counts words (word = token), built with the
    ``tokenizers`` library: the independent count of the fake server's text."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{f"w{i}": i for i in range(1, 40)}, "fn": 40}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    d = tmp_path / "tok"
    d.mkdir()
    tok.save(str(d / "tokenizer.json"))
    return d
