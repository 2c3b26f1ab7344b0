"""Sharded execution (gloo, one process per rank) equals single-process logits within 1e-5.

Layouts: TP only, EP only (attention DP + EP, no TP), TP+EP, dp=2 with TP and EP, GQA with KV
heads replicated (TP 4 > 2 KV heads); and a ``sharded`` dir written by ``ascend convert``.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow

TOL = 1e-5
BATCH = [[17, 250, 3, 999, 42, 511, 8, 700, 123], [5, 901, 64, 33, 2, 77, 400]]  # two DP-able sequences


@pytest.mark.parametrize(
    "family, ranks, dp, ep",
    [
        ("glm_moe_dsa", 2, 1, 1),  # TP only: attention TP 2, MoE TP 2
        ("glm_moe_dsa", 2, 2, 2),  # EP only: attention DP 2 (TP 1), EP 2 (MoE TP 1)
        ("deepseek_v3", 4, 1, 2),  # TP + EP: attention TP 4, EP 2 x MoE TP 2
        ("deepseek_v32", 4, 2, 4),  # dp=2: attention TP 2 per group, EP 4
        ("glm4_moe", 4, 1, 1),  # GQA 8 q / 2 kv heads at TP 4: KV heads replicated
    ],
)
def test_sharded_matches_single_process(family, ranks, dp, ep, tiny_dir):
    from ascend.reference import compute_logits

    path = tiny_dir(family)
    want = compute_logits(path, BATCH)
    got = compute_logits(path, BATCH, ranks=ranks, dp=dp, ep=ep)
    assert got.shape == want.shape == (sum(map(len, BATCH)), 1024)
    assert (got - want).abs().max().item() < TOL


@pytest.mark.parametrize(
    "precision, tp, dp, ep",
    [
        ("bf16", 2, 2, 4),  # TP-split BF16 shards
        ("fp8", 1, 2, 2),  # FP8 shards (no TP split, so 128-blocks stay whole): dequantized per rank
    ],
)
def test_converted_sharded_dir(precision, tp, dp, ep, tiny_dir, tmp_path):
    """``ascend convert --layout sharded`` output (from an FP8 tiny) runs with its plan's layout."""
    from ascend.cli.main import main
    from ascend.reference import compute_logits

    src = tiny_dir("deepseek_v32", fp8=True)  # ue8m0 scales: FP8 -> BF16 is exact
    out = tmp_path / "sharded"
    try:
        main(["convert", "--src", str(src), "--out", str(out), "--precision", precision, "--layout", "sharded",
              "--tp", str(tp), "--dp", str(dp), "--ep", str(ep)])
    except SystemExit as exc:
        assert not exc.code, f"ascend convert failed with {exc.code}"
    world = tp * dp
    assert (out / f"model-rank-{world - 1:05d}-of-{world:05d}.safetensors").is_file()
    want = compute_logits(src, BATCH[0])
    got = compute_logits(out, BATCH[0])  # ranks/dp/ep from ascend-sharding.json
    assert (got - want).abs().max().item() < TOL


def test_one_rank_failing_to_load_fails_the_job(tiny_dir, tmp_path):
    """A bad tensor in one rank's file: every rank stops, the error names that file and tensor."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from ascend.errors import CheckpointError
    from ascend.models.args import load_model_args
    from ascend.models.sharding import ShardCoords, shard_slice
    from ascend.models.tensors import tensor_specs
    from ascend.reference import compute_logits

    src = tiny_dir("glm4_moe")
    out = tmp_path / "sharded"
    out.mkdir()
    shutil.copy(src / "config.json", out / "config.json")
    full = {}
    for file in sorted(src.glob("model-*.safetensors")):
        full.update(load_file(str(file)))
    args = load_model_args(src)
    for rank in range(2):  # a 2-rank TP sharded dir, sliced with the shared partitioning function
        coords = ShardCoords.for_rank(rank, 2)
        part = {}
        for spec in tensor_specs(args, mtp=False):
            sl = shard_slice(spec, coords)
            if sl is not None:
                part[spec.name] = full[spec.name][sl].contiguous()
        if rank == 1:
            part["model.layers.1.self_attn.o_proj.weight"] = part["model.layers.1.self_attn.o_proj.weight"][:, :-2].contiguous()
        save_file(part, str(out / f"model-rank-{rank:05d}-of-00002.safetensors"))
    (out / "ascend-sharding.json").write_text(json.dumps({"world_size": 2, "dp": 1, "ep": 1}))
    with pytest.raises(CheckpointError) as exc:
        compute_logits(out, BATCH[0], timeout_s=120)
    assert "model-rank-00001-of-00002.safetensors" in exc.value.line()
    assert "model.layers.1.self_attn.o_proj.weight" in exc.value.line()


def _runner_rank(rank: int, world: int, dp: int, ep: int, port: int, path: str, out: str) -> None:
    from safetensors.torch import save_file

    from ascend.reference import ModelRunner

    torch.set_num_threads(1)
    runner = ModelRunner(path, rank=rank, world_size=world, dp=dp, ep=ep, master_port=port)
    if rank != 0:
        runner.follow()
        return
    with runner:
        a, b, c = runner.new_sequence(), runner.new_sequence(), runner.new_sequence()
        first = runner.forward([a, b], [BATCH[0][:5], BATCH[1][:3]])  # two prefills (DP groups 0, 1)
        second = runner.forward([b, c, a], [BATCH[1][3:], BATCH[0][:2], [BATCH[0][5]]])  # decode + prefill
        runner.free(c)
        save_file({"first": first, "second": second}, out)


def test_model_runner_multi_process(tiny_dir, tmp_path):
    """ModelRunner over 2 processes with dp=2, ep=2: rank 0 drives, rank 1 follows."""
    import multiprocessing as mp

    from safetensors.torch import load_file

    from ascend.reference import compute_logits
    from ascend.reference.parallel import free_port

    path = tiny_dir("glm_moe_dsa")
    out = tmp_path / "runner.safetensors"
    ctx = mp.get_context("forkserver")
    port = free_port()
    procs = [ctx.Process(target=_runner_rank, args=(r, 2, 2, 2, port, str(path), str(out))) for r in range(2)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    got = load_file(str(out))
    full_a = compute_logits(path, BATCH[0][:6])
    full_b = compute_logits(path, BATCH[1])
    full_c = compute_logits(path, BATCH[0][:2])
    assert (got["first"][0] - full_a[4]).abs().max().item() < TOL
    assert (got["first"][1] - full_b[2]).abs().max().item() < TOL
    assert (got["second"][0] - full_b[-1]).abs().max().item() < TOL
    assert (got["second"][1] - full_c[-1]).abs().max().item() < TOL
    assert (got["second"][2] - full_a[5]).abs().max().item() < TOL
