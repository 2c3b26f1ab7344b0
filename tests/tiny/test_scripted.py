"""The scripted (constructed-weights) GLM-5 checkpoint: the mechanism runs through the real
reference model (MLA + DSA + MoE, FP8 source), and corrupting attention or experts breaks it.

Token ids here are synthetic (no tokenizer needed); tests/e2e drives the real tokenizer, chat
template, conversion, CPU engine and smoke suite.
"""

from __future__ import annotations

import json

import pytest
import torch

from ascend.models.args import ModelArgs
from ascend.tiny.configs import special_tokens, tiny_config
from ascend.tiny.scripted import (
    Design,
    ScriptError,
    check_scripted,
    encode_tensors,
    full_tensors,
    greedy,
    scripted_tensors,
    segment,
)

SP = special_tokens("glm_moe_dsa")
TOOLS, WEATHER = 500, (501, 502)


def make_design() -> Design:
    return Design(
        markers={"conv": {SP["[gMASK]"]}, "tools": {TOOLS}, "weather": set(WEATHER), "obs": {SP["<|observation|>"]}},
        reasoning=[10, 11, 12],
        bodies={
            "answer": [20, 21, 22, 23, 24, SP["<|user|>"]],
            "call_weather": [SP["<tool_call>"], 30, 31, SP["<arg_key>"], 32, SP["</arg_key>"], SP["<arg_value>"], 33,
                             SP["</arg_value>"], SP["</tool_call>"], SP["<|observation|>"]],
            "call_time": [SP["<tool_call>"], 40, 41, SP["</tool_call>"], SP["<|observation|>"]],
            "after_tool": [50, 51, 52, SP["<|user|>"]],
        },
        think=SP["<think>"], end_think=SP["</think>"], assistant=SP["<|assistant|>"], fallback=3,
    )


def prompts() -> dict[str, list[int]]:
    G, S, U, A = SP["[gMASK]"], SP["<sop>"], SP["<|user|>"], SP["<|assistant|>"]
    filler = list(range(100, 124))
    return {
        "answer-thinking": [G, S, U, *filler, A, SP["<think>"]],
        "weather": [G, S, 600, TOOLS, *WEATHER, 601, U, *filler, A, SP["</think>"]],
        "time": [G, S, 600, TOOLS, 601, U, *filler, A, SP["</think>"]],
        "after-tool": [G, S, 600, TOOLS, WEATHER[0], U, *filler, A, SP["</think>"], SP["<tool_call>"], 30,
                       SP["<|observation|>"], 700, A, SP["</think>"]],
    }


def write(dirpath, tensors: dict[str, torch.Tensor], fp8: bool = True):
    from safetensors.torch import save_file

    cfg = tiny_config("glm_moe_dsa", fp8=fp8)
    dirpath.mkdir(parents=True, exist_ok=True)
    (dirpath / "config.json").write_text(json.dumps(cfg))
    args = ModelArgs.from_config(cfg)
    save_file(encode_tensors(args, full_tensors(args, tensors), fp8=fp8), str(dirpath / "model.safetensors"))
    return dirpath


@pytest.fixture(scope="module")
def built():
    d = make_design()
    args = ModelArgs.from_config(tiny_config("glm_moe_dsa", fp8=True))
    return d, scripted_tensors(args, d)


def test_scripts_run_through_the_reference_model_from_fp8(tmp_path, built):
    d, tensors = built
    model_dir = write(tmp_path / "ok", tensors, fp8=True)
    cases = prompts()
    assert {n: d.category(p) for n, p in cases.items()} == {
        "answer-thinking": "answer", "weather": "call_weather", "time": "call_time", "after-tool": "after_tool"}
    check_scripted(model_dir, d, list(cases.items()))  # raises unless every script is produced


def _first_tokens(model_dir, d, name):
    from ascend.reference.model import ReferenceModel

    ids = prompts()[name]
    return greedy(ReferenceModel(model_dir, mtp=False), ids, 3, set()), d.expected_output(ids)[:3]


def test_swapped_experts_break_the_script(tmp_path, built):
    """A conversion that puts expert 0's weights under expert 1 (and back) loses transitions."""
    d, tensors = built
    bad = dict(tensors)
    for part in ("gate_proj", "up_proj", "down_proj"):
        a, b = f"model.layers.1.mlp.experts.0.{part}.weight", f"model.layers.1.mlp.experts.1.{part}.weight"
        bad[a], bad[b] = tensors[b], tensors[a]
    got, want = _first_tokens(write(tmp_path / "swapped", bad), d, "weather")
    assert got != want and d.fallback in got


def test_wrong_head_split_breaks_tool_detection(tmp_path, built):
    """Attention heads in the wrong order (a wrong TP split of q_b_proj): the tools flag is lost."""
    d, tensors = built
    bad = dict(tensors)
    q_b = tensors["model.layers.0.self_attn.q_b_proj.weight"].view(4, -1, tensors["model.layers.0.self_attn.q_b_proj.weight"].shape[1])
    bad["model.layers.0.self_attn.q_b_proj.weight"] = q_b[[2, 3, 0, 1]].reshape(-1, q_b.shape[-1])
    got, want = _first_tokens(write(tmp_path / "heads", bad), d, "time")
    assert got != want


def test_lost_shared_expert_breaks_thinking(tmp_path, built):
    d, tensors = built
    bad = dict(tensors)
    bad["model.layers.1.mlp.shared_experts.down_proj.weight"] = torch.zeros_like(tensors["model.layers.1.mlp.shared_experts.down_proj.weight"])
    got, want = _first_tokens(write(tmp_path / "noshared", bad), d, "answer-thinking")
    assert got != want


def test_design_validation():
    d = make_design()
    assert d.expected_output(prompts()["time"]) == d.bodies["call_time"]
    assert d.category([1, 2, 3]) == "none"  # no conversation marker: no script
    args = ModelArgs.from_config(tiny_config("deepseek_v3"))
    with pytest.raises(ScriptError, match="glm_moe_dsa"):
        scripted_tensors(args, d)


def test_segment_avoids_repeats_and_banned():
    vocab = {"a": 0, "b": 1, "ab": 2, "aba": 3, "Ġ": 4}
    assert segment("aba", vocab, set()) == [3]
    assert segment("aba", vocab, {3}) == [2, 0]
    assert segment("abab", vocab, set()) == [3, 1]
    assert segment("aa", vocab, set()) is None  # 'a' would repeat


def test_design_against_the_smoke_suite_with_the_tiny_tokenizer(tmp_path):
    """The real tiny tokenizer + chat template + the smoke suite's conversations: every
    conversation lands in its category and the scripts decode to GLM-5 grammar (no weights)."""
    from ascend.smoke.probes import probe_conversations
    from ascend.tiny.scripted import load_design
    from ascend.tiny.writer import write_tiny_checkpoint

    model_dir = write_tiny_checkpoint(tmp_path / "tiny", "glm_moe_dsa", fp8=True)
    d, render, tok = load_design(model_dir, probe_conversations())
    dec = lambda ids: tok.decode(ids, skip_special_tokens=False)  # noqa: E731
    assert dec(d.bodies["call_weather"]) == (
        "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call><|observation|>")
    assert dec(d.bodies["call_time"]) == "<tool_call>get_time</tool_call><|observation|>"
    assert d.markers["conv"] == {SP["[gMASK]"]} and d.markers["obs"] == {SP["<|observation|>"]}
    for body in d.bodies.values():  # within one category no token repeats
        assert len(set(body)) == len(body)


def test_tiny_cli_writes_the_scripted_checkpoint(cli, tmp_path):
    out = tmp_path / "scripted"
    result = cli("tiny", str(out), "--arch", "glm_moe_dsa", "--fp8", "--scripted", "--json")
    assert result.code == 0, result.err
    assert (out / "ascend-scripted.json").is_file()  # written only after the self-check passed
    refused = cli("tiny", str(tmp_path / "x"), "--arch", "deepseek_v3", "--scripted")
    assert refused.code == 2 and "--scripted exists for glm_moe_dsa only" in refused.err
