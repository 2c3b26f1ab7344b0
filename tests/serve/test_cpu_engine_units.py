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


# --- issue 16 #5: one request failing fails that request only
def test_tiny_temperature_samples_greedily():
    logits = torch.tensor([0.0, 5.0, 4.9, -3.0, 1.0])
    for t in (1e-40, 5e-324, 1e-6):
        assert sample(logits, SamplingParams(max_tokens=1, temperature=t), torch.Generator().manual_seed(0)) == 1


def _serve(scheduler, requests):
    """Submit ``requests`` (prompt ids, SamplingParams) and collect each one's events until it ends."""
    import asyncio

    from ascend.serve.cpu_engine.scheduler import Request

    async def run():
        loop = asyncio.get_running_loop()
        reqs = [Request(ids, params, loop) for ids, params in requests]
        for req in reqs:
            scheduler.submit(req)
        out = []
        for req in reqs:
            events = []
            while not events or events[-1][0] == "token":
                events.append(await asyncio.wait_for(req.queue.get(), 20))
            out.append(events)
        return out

    return asyncio.run(run())


def test_a_failing_request_fails_alone_and_the_scheduler_keeps_serving():
    from ascend.serve.cpu_engine.generator import ScriptedGenerator
    from ascend.serve.cpu_engine.scheduler import Scheduler

    POISON, EOS = 7, 0

    class Flaky(ScriptedGenerator):
        """NaN logits for prompts starting with POISON (sampling them fails); forward raises for 66."""

        def forward(self, seq_ids, token_lists):
            if any(toks[0] == 66 for toks in token_lists):
                raise RuntimeError("this batch failed")
            out = super().forward(seq_ids, token_lists)
            for row, sid in enumerate(seq_ids):
                if self.sequences[sid][0] == POISON:
                    out[row] = float("nan")
            return out

    gen = Flaky(vocab_size=32, eos_id=EOS, script=lambda ids: [5, 6, 5])
    sched = Scheduler(gen, {EOS}, max_seqs=4, max_tokens_per_batch=64)
    sched.start()
    try:
        hot = SamplingParams(max_tokens=8, temperature=1.0)
        poisoned, bad_seed, healthy = _serve(sched, [([POISON, 1], hot), ([2, 3], SamplingParams(max_tokens=8, seed=2**64)),
                                                     ([1, 2], SamplingParams(max_tokens=8))])
        assert poisoned[-1][0] == "error" and "sampling failed" in poisoned[-1][1]
        assert bad_seed[-1][0] == "error" and "starting the request failed" in bad_seed[-1][1]
        assert [v for k, v in healthy] == [5, 6, 5, "stop"]
        assert sched.health() is None
        (failed,) = _serve(sched, [([66], SamplingParams(max_tokens=8))])  # a forward failure: its batch only
        assert failed[-1][0] == "error" and "this batch failed" in failed[-1][1]
        (again,) = _serve(sched, [([1, 2], SamplingParams(max_tokens=8))])
        assert [v for k, v in again] == [5, 6, 5, "stop"] and sched.health() is None
        assert not gen.sequences  # every sequence freed
    finally:
        sched.stop()


# --- issue 16 #6: the served max model length comes from the engine's environment
def test_max_model_len_env(monkeypatch, tmp_path):
    from ascend.errors import ServeError
    from ascend.serve.cpu_engine.main import MAX_MODEL_LEN_ENV, max_model_len_from_env

    monkeypatch.delenv(MAX_MODEL_LEN_ENV, raising=False)
    assert max_model_len_from_env() is None
    monkeypatch.setenv(MAX_MODEL_LEN_ENV, "4096")
    assert max_model_len_from_env() == 4096
    monkeypatch.setenv(MAX_MODEL_LEN_ENV, "-5")
    with pytest.raises(ServeError, match=MAX_MODEL_LEN_ENV):
        max_model_len_from_env()
    r = subprocess.run([sys.executable, "-m", "ascend.serve.cpu_engine.main", f"--model={tmp_path}"], capture_output=True,
                       text=True, timeout=60, env={**__import__("os").environ, MAX_MODEL_LEN_ENV: "lots"})
    assert r.returncode == 2 and "is not a positive integer" in r.stderr and "Traceback" not in r.stderr


# --- issue 16 #9: the rendezvous store listens on the master address only
def test_rendezvous_store_binds_the_master_address_only():
    from engine_fixtures import listening_addresses

    from ascend.errors import ServeError
    from ascend.reference.parallel import free_port, rendezvous_store

    port = free_port()
    store = rendezvous_store("127.0.0.1", port, rank=0, world_size=1, timeout_s=10)
    store.set("k", "v")
    assert listening_addresses(port) == ["0100007F"]  # 127.0.0.1, not 0.0.0.0 or ::
    del store
    with pytest.raises(ServeError, match="cannot serve the rendezvous store on 192.0.2.1"):
        rendezvous_store("192.0.2.1", free_port(), rank=0, world_size=2, timeout_s=10)  # not this machine's address
