"""`ascend eval` against a scripted OpenAI-compatible server: scores are exact, thresholds give
exit 3 naming the task and score, bad data gives exit 2 with one line naming file and line."""

from __future__ import annotations

import json

import pytest
from fake_openai import FakeChatServer

from ascend.cli.main import main

MATH = [
    {"question": "Tom has 3 apples and buys 4 more.", "answer": "3 + 4 = 7\n#### 7"},
    {"question": "A box holds 12 pens; 5 boxes?", "answer": "#### 60"},
    {"question": "Anna had 1,250 dollars and spent 250.", "answer": "1,000"},
    {"question": "Half of 9?", "answer": "#### 4.5"},
]
CHOICE = [
    {"question": "Capital of France?", "choices": ["Berlin", "Paris", "Rome"], "answer": 1},
    {"question": "Largest planet?", "A": "Mars", "B": "Venus", "C": "Jupiter", "answer": "C"},
    {"question": "Colour of the sky?", "choices": ["blue", "green"], "answer": "A"},
]
# 3 of 4 math right (the last number of "4 or 5" is 5, not 4.5); 2 of 3 choices right.
REPLIES = {
    "Tom has": "3 + 4 = 7. He has 7 apples.",
    "box holds": "5 x 12 = 60",
    "Anna had": "She has $1,000 left.",
    "Half of 9": "4 or 5",
    "Capital of France": "The answer is B.",
    "Largest planet": "C",
    "Colour of the sky": "B",
}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(["eval", *args])
    out = capsys.readouterr()
    code = exc.value.code if isinstance(exc.value.code, int) else (0 if exc.value.code is None else 1)
    return code, out.out, out.err


@pytest.fixture
def files(tmp_path):
    return write_jsonl(tmp_path / "math.jsonl", MATH), write_jsonl(tmp_path / "mc.jsonl", CHOICE)


def test_scores_are_exact_and_thinking_is_sent(tmp_path, files, capsys):
    math, mc = files
    report = tmp_path / "eval.json"
    with FakeChatServer(REPLIES) as srv:
        code, out, err = run_cli(capsys, "--base-url", srv.url, "--model", "m", "--task", f"math:{math}",
                                 "--task", f"choice:{mc}", "--thinking", "--json", str(report))
    assert code == 0, err
    data = json.loads(report.read_text())
    scores = {t["name"]: (t["correct"], t["samples"]) for t in data["tasks"]}
    assert scores == {"math": (3, 4), "mc": (2, 3)}
    assert "math: 0.750 = 3/4" in out
    # every request: greedy, the thinking switch, the recipe's model name
    assert len(srv.bodies) == 7
    assert all(b["chat_template_kwargs"] == {"enable_thinking": True} and b["temperature"] == 0 for b in srv.bodies)
    # the options are in the prompt with their letters
    mc_prompt = next(b["messages"][0]["content"] for b in srv.bodies if "Largest planet" in b["messages"][0]["content"])
    assert "A. Mars\nB. Venus\nC. Jupiter" in mc_prompt


def test_threshold_broken_exits_3_naming_task_and_score(files, capsys):
    math, mc = files
    with FakeChatServer(REPLIES) as srv:
        code, out, err = run_cli(capsys, "--base-url", srv.url, "--model", "m", "--task", f"math:{math}",
                                 "--threshold", "0.8")
    assert code == 3
    assert "math: 0.750 = 3/4 (threshold 0.80)" in err and len(err.strip().splitlines()) == 1
    with FakeChatServer(REPLIES) as srv:  # the same score passes a threshold it meets
        code, _, err = run_cli(capsys, "--base-url", srv.url, "--model", "m", "--task", f"math:{math}", "--threshold", "0.75")
    assert code == 0, err


def test_request_errors_count_as_wrong(files, capsys, tmp_path):
    math, _ = files
    report = tmp_path / "e.json"
    with FakeChatServer(REPLIES, fail_on="Tom has") as srv:
        code, _, _ = run_cli(capsys, "--base-url", srv.url, "--model", "m", "--task", f"math:{math}", "--json", str(report))
    task = json.loads(report.read_text())["tasks"][0]
    assert code == 0 and task["correct"] == 2 and task["errors"] == 1


@pytest.mark.parametrize("content,where", [
    ('{"question": "q", "answer": "#### 1"}\n{"question": "q2", "answer"\n', ":2: not valid JSON"),
    ('{"question": "q"}\n', ":1: missing field 'answer'"),
    ('{"question": "q", "answer": "many"}\n', ":1: answer 'many' has no final number"),
])
def test_bad_math_file_exits_2_with_file_and_line(tmp_path, capsys, content, where):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    with FakeChatServer(REPLIES) as srv:
        code, _, err = run_cli(capsys, "--base-url", srv.url, "--model", "m", "--task", f"math:{bad}")
        assert srv.bodies == []  # data is checked before any request
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"{bad}{where}" in err, err


def test_bad_choice_records_exit_2(tmp_path, capsys):
    bad = write_jsonl(tmp_path / "mc.jsonl", [{"question": "q", "choices": ["x", "y"], "answer": "D"}])
    with FakeChatServer(REPLIES) as srv:
        code, _, err = run_cli(capsys, "--base-url", srv.url, "--model", "m", "--task", f"choice:{bad}")
    assert code == 2 and f"{bad}:1: answer is not one of the 2 options" in err
    missing = tmp_path / "nope.jsonl"
    code, _, err = run_cli(capsys, "--base-url", "http://127.0.0.1:9", "--model", "m", "--task", f"choice:{missing}")
    assert code == 2 and f"eval data file {missing} does not exist" in err


def test_samples_limits_items(files, capsys, tmp_path):
    math, _ = files
    report = tmp_path / "e.json"
    with FakeChatServer(REPLIES) as srv:
        run_cli(capsys, "--base-url", srv.url, "--model", "m", "--task", f"math:{math}", "--samples", "2", "--json", str(report))
    assert json.loads(report.read_text())["tasks"][0]["samples"] == 2 and len(srv.bodies) == 2


def test_recipe_mode_uses_the_recipe_eval_section(tmp_path, capsys):
    """The tiny recipe's shipped task files, its threshold and its endpoint model name."""
    with FakeChatServer({"": "Hello to you and your world!"}) as srv:
        code, out, err = run_cli(capsys, "tiny/glm5-cpu", "--base-url", srv.url, "--model", "tiny")
    # the packaged choice file: 3 of 4 items have the greeting as the right option
    assert code == 0, err
    assert "tiny-choice: 0.750 = 3/4 (threshold 0.75)" in out and "tiny-math: 0.000 = 0/3 (no threshold)" in out
    with FakeChatServer({"": "???"}) as srv:  # what the scripted model says when its weights are broken
        code, _, err = run_cli(capsys, "tiny/glm5-cpu", "--base-url", srv.url, "--model", "tiny")
    assert code == 3 and "tiny-choice: 0.000 = 0/4 (threshold 0.75)" in err
