"""ModelRunner (single process) and ``ascend logits``: batching, caches, validation."""

from __future__ import annotations

import pytest
import torch

from ascend.errors import AscendError

A = [17, 250, 3, 999, 42, 511, 8, 700, 123]
B = [5, 901, 64, 33, 2, 77]


def test_runner_batches_prefill_and_decode(tiny_dir):
    from ascend.reference import ModelRunner, compute_logits

    path = tiny_dir("deepseek_v32")
    full_a, full_b = compute_logits(path, A), compute_logits(path, B)
    with ModelRunner(path) as runner:
        assert runner.is_driver and runner.vocab_size == 1024 and runner.eos_token_ids == [1]
        a, b = runner.new_sequence(), runner.new_sequence()
        out = runner.forward([a], [A[:4]])
        assert out.shape == (1, 1024) and out.dtype == torch.float32
        assert (out[0] - full_a[3]).abs().max().item() < 1e-5
        out = runner.forward([b, a], [B, A[4:6]])  # b prefill batched with a's chunk
        assert (out[0] - full_b[-1]).abs().max().item() < 1e-5
        assert (out[1] - full_a[5]).abs().max().item() < 1e-5
        for i in range(6, len(A)):  # decode one token at a time
            out = runner.forward([a], [[A[i]]])
            assert (out[0] - full_a[i]).abs().max().item() < 1e-5
        runner.free(b)
        with pytest.raises(AscendError, match="unknown or freed"):
            runner.forward([b], [[1]])
        with pytest.raises(AscendError, match="twice"):
            runner.forward([a, a], [[1], [2]])
        with pytest.raises(AscendError, match="vocabulary"):
            runner.forward([a], [[4096]])
        with pytest.raises(AscendError, match="no tokens"):
            runner.forward([a], [[]])
        with pytest.raises(AscendError, match="max_position_embeddings"):
            runner.forward([a], [[1] * runner.max_model_len])  # a already holds tokens
        out = runner.forward([a], [[5]])  # still usable after rejected calls
        assert torch.isfinite(out).all()
    with pytest.raises(AscendError, match="shut down"):
        runner.forward([a], [[1]])


def test_batched_compute_logits_is_per_sequence(tiny_dir):
    from ascend.reference import compute_logits

    path = tiny_dir("glm_moe_dsa")
    both = compute_logits(path, [A, B])
    assert (both[: len(A)] - compute_logits(path, A)).abs().max().item() < 1e-5
    assert (both[len(A):] - compute_logits(path, B)).abs().max().item() < 1e-5
    square = compute_logits(path, torch.tensor([A[:6], B]))
    assert square.shape == (2, 6, 1024)


def test_cli_logits(tiny_dir, tmp_path, cli):
    from safetensors.torch import load_file

    from ascend.reference import compute_logits

    path = tiny_dir("glm4_moe")
    out = tmp_path / "logits.safetensors"
    res = cli("logits", str(path), "--input-ids", ",".join(map(str, A)), "--out", str(out))
    assert res.code == 0, res.err
    logits = load_file(str(out))["logits"]
    assert logits.shape == (len(A), 1024) and logits.dtype == torch.float32
    assert torch.equal(logits, compute_logits(path, A))


def test_mtp_decode_with_cache_matches_one_shot(tiny_dir):
    """The MTP layer keeps its own KV cache: pair-by-pair decode equals the one-shot pass."""
    from ascend.reference import compute_mtp_logits
    from ascend.reference.model import ReferenceModel, Sequence

    path = tiny_dir("glm_moe_dsa")  # MTP layer with its own DSA indexer
    one_shot = compute_mtp_logits(path, A)
    model = ReferenceModel(path)
    seq, rows = Sequence(), []
    prev = model.forward([seq], [[A[0]]])
    for i in range(1, len(A)):
        rows.append(model.mtp.forward([seq], prev, [[A[i]]]))
        prev = model.forward([seq], [[A[i]]])
    assert (torch.cat(rows) - one_shot).abs().max().item() < 1e-5
