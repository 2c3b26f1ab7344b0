"""CPU engine pieces: gflags parsing, sampling, the scheduler's batching and stop handling."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ascend.serve.cpu_engine.flags import FlagError, parse_flags
from ascend.serve.cpu_engine.scheduler import SamplingParams, sample


def test_gflags_forms():
    f = parse_flags(["--model=/m", "--port", "9000", "-node_rank=3", "--enable_graph", "--noenable_prefix_cache",
                     "--max_memory_utilization=0.5", "--enable_schedule_overlap=false"])
    assert (f["model"], f["port"], f["node_rank"]) == ("/m", 9000, 3)
    assert f["enable_graph"] is True and f["enable_prefix_cache"] is False and f["enable_schedule_overlap"] is False
    assert f["max_memory_utilization"] == 0.5 and f["nnodes"] == 1  # defaults filled in


def test_config_json_file_overrides_but_not_rank_flags(tmp_path):
    cfg = tmp_path / "xllm.json"
    cfg.write_text('{"max_seqs_per_batch": 4, "enable_prefix_cache": false, "node_rank": 7, "port": 1}')
    f = parse_flags(["--model=/m", "--max_seqs_per_batch=64", "--node_rank=1", "--port=9000", f"--config_json_file={cfg}"])
    assert f["max_seqs_per_batch"] == 4 and f["enable_prefix_cache"] is False
    assert (f["node_rank"], f["port"]) == (1, 9000)
    cfg.write_text('{"no_such_flag": 1}')
    with pytest.raises(FlagError, match="unknown flag 'no_such_flag'"):
        parse_flags(["--model=/m", f"--config_json_file={cfg}"])


@pytest.mark.parametrize("argv,message", [
    (["--model=/m", "--enable_mla=true"], "unknown command line flag 'enable_mla'"),
    (["--model=/m", "--port=abc"], "illegal value 'abc' specified for int32 flag 'port'"),
    (["--port=1"], "--model flag is required"),
    (["--model=/m", "stray"], "unexpected positional argument"),
])
def test_gflags_errors(argv, message):
    with pytest.raises(FlagError, match=message):
        parse_flags(argv)


def test_unknown_flag_exits_nonzero_like_xllm():
    r = subprocess.run([sys.executable, "-m", "ascend.serve.cpu_engine.main", "--model=/m", "--bogus=1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "unknown command line flag 'bogus'" in r.stderr


def test_sampling():
    logits = torch.tensor([0.0, 5.0, 4.9, -3.0, 1.0])
    assert sample(logits, SamplingParams(max_tokens=1), None) == 1  # greedy by default (xLLM temperature 0)
    g = torch.Generator().manual_seed(0)
    top2 = {sample(logits, SamplingParams(max_tokens=1, temperature=5.0, top_k=2), g) for _ in range(300)}
    assert top2 == {1, 2}
    nucleus = {sample(logits, SamplingParams(max_tokens=1, temperature=1.0, top_p=0.3), g) for _ in range(200)}
    assert nucleus == {1}  # token 1 alone holds > 30 % of the mass
    wide = {sample(logits, SamplingParams(max_tokens=1, temperature=10.0), g) for _ in range(500)}
    assert wide == {0, 1, 2, 3, 4}
    a = [sample(logits, SamplingParams(max_tokens=1, temperature=3.0), torch.Generator().manual_seed(5)) for _ in range(5)]
    assert len(set(a)) == 1  # same seed, same draw
