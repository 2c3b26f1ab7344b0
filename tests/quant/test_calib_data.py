"""Calibration data: the built-in set through each family's chat template, JSONL files, errors."""

from __future__ import annotations

import json
import re

import pytest

from ascend.quant import data
from ascend.tiny.configs import FAMILIES


def test_builtin_set_is_mixed():
    texts = [q + a for q, a in data.BUILTIN]
    assert len(texts) >= 30
    assert sum(bool(re.search(r"[\u4e00-\u9fff]", t)) for t in texts) >= 8  # Chinese
    assert sum(not re.search(r"[\u4e00-\u9fff]", t) for t in texts) >= 8  # English
    assert sum("```" in t for t in texts) >= 6  # code
    assert sum(bool(re.search(r"\d+\s*[×+−=*/^]", t)) for t in texts) >= 6  # math


@pytest.mark.parametrize("family", FAMILIES)
def test_builtin_set_renders_with_the_family_template(family, tiny_dir):
    """Every sample goes through the checkpoint's own chat template (its role markers appear
    around the content) and its tokenizer (decoding gives the rendered text back)."""
    from tokenizers import Tokenizer

    from ascend.chat.template import ChatTemplate

    path = tiny_dir(family)
    samples = data.builtin_samples()
    seqs = data.tokenize_samples(path, samples, samples=len(samples), max_len=100_000)
    assert len(seqs) == len(samples)
    template = ChatTemplate.from_model_dir(path)
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    user_marker = "<|user|>" if family.startswith("glm") else "<｜User｜>"
    for rec, ids in zip(samples, seqs):
        text = tok.decode(ids, skip_special_tokens=False)
        assert text == template.render(rec["messages"], tools=rec.get("tools"), add_generation_prompt=False)
        question, answer = rec["messages"][0]["content"], rec["messages"][-1]["content"]
        assert user_marker in text and question in text and answer in text
        assert text.index(user_marker) < text.index(question)
        for tool in rec.get("tools", []):  # tool-use samples carry their schemas and the call
            assert tool["function"]["name"] in text
        for call in (c for m in rec["messages"] for c in m.get("tool_calls", [])):
            assert text.index(question) < text.rindex(call["function"]["name"]) < text.index(answer)


def test_builtin_set_has_tool_use():
    """Tool schemas, calls and results, in both languages, held out too (every 8th sample)."""
    samples = data.builtin_samples()
    with_tools = [i for i, r in enumerate(samples) if r.get("tools")]
    calls = [i for i in with_tools if any(m.get("tool_calls") for m in samples[i]["messages"])]
    assert len(with_tools) >= 5 and len(calls) >= 4
    assert any(re.search(r"[\u4e00-\u9fff]", samples[i]["messages"][0]["content"]) for i in calls)
    assert any(i % 8 == 7 for i in calls) and any(i % 8 != 7 for i in calls)


def test_jsonl_text_and_messages_samples_and_max_len(tmp_path, tiny_dir):
    path = tiny_dir("glm4_moe")
    f = tmp_path / "calib.jsonl"
    lines = [{"text": "plain text sample number one, long enough to be cut"},
             {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
             {"text": "third"}]
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    records = data.load_jsonl(f)
    assert records == lines
    seqs = data.tokenize_samples(path, records, samples=2, max_len=5)
    assert len(seqs) == 2 and all(len(s) == 5 for s in seqs)
    full = data.tokenize_samples(path, records, samples=3, max_len=10_000)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    assert tok.decode(full[0]) == lines[0]["text"]  # text is used as is, no template
    assert "<|user|>" in tok.decode(full[1], skip_special_tokens=False)


BAD = [
    ("{not json", ":2: not valid JSON"),
    ("[1, 2]", ":2: expected a JSON object"),
    ('{"text": ""}', ':2: "text" must be a non-empty string'),
    ('{"prompt": "x"}', ':2: no "text" or "messages" key'),
    ('{"messages": []}', ':2: "messages" must be a non-empty list'),
    ('{"messages": [{"role": "user"}]}', ':2: messages[0] must be an object with string "role" and "content"'),
    ('{"messages": [{"role": "user", "content": "x"}], "tools": "get_weather"}', ':2: "tools" must be a list of tool definitions'),
]


@pytest.mark.parametrize("line,want", BAD)
def test_bad_jsonl_is_one_line_exit_2(line, want, tmp_path, tiny_dir, cli):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "fine"}\n' + line + "\n")
    r = cli("calibrate", "--src", str(tiny_dir("glm4_moe")), "--out", str(tmp_path / "out"), "--calib", str(f))
    assert r.code == 2, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and f"{f}{want}" in lines[0]
    assert "Traceback" not in r.err


@pytest.mark.parametrize("content", ["", "\n\n", None])
def test_empty_or_missing_file_exit_2(content, tmp_path, tiny_dir, cli):
    f = tmp_path / "calib.jsonl"
    if content is not None:
        f.write_text(content)
    r = cli("calibrate", "--src", str(tiny_dir("glm4_moe")), "--out", str(tmp_path / "out"), "--calib", str(f))
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and str(f) in r.err
