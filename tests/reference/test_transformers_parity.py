"""Reference logits vs transformers 5.23 (the independent oracle), every family, float32.

Prefill over a sequence longer than ``index_topk`` (so DSA really selects) and token-by-token
decode with the KV cache, on (a) random models built by transformers and saved with
``save_pretrained``, (b) ``ascend tiny`` checkpoints loaded by transformers. Tolerance 1e-4
max-abs; observed ~3e-6.
"""

from __future__ import annotations

import pytest
import torch

from ascend.tiny.configs import FAMILIES

TOL = 1e-4
IDS = [17, 250, 3, 999, 42, 511, 8, 700, 123, 64, 901, 5]  # 12 > index_topk = 4


def _transformers_decode(model, ids: list[int]) -> torch.Tensor:
    """transformers' own token-by-token decode with its cache: [T, vocab]."""
    from transformers import DynamicCache

    cache, rows = DynamicCache(config=model.config), []
    with torch.no_grad():
        for i, tok in enumerate(ids):
            out = model(torch.tensor([[tok]]), past_key_values=cache, use_cache=True,
                        position_ids=torch.tensor([[i]]))
            cache = out.past_key_values
            rows.append(out.logits[0, -1])
    return torch.stack(rows)


def _ours(path, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    from ascend.reference.model import ReferenceModel, Sequence

    model = ReferenceModel(path)
    prefill = model.logits(model.forward([Sequence()], [ids]))
    seq = Sequence()
    decode = torch.cat([model.logits(model.forward([seq], [[t]])) for t in ids])
    return prefill, decode


@pytest.mark.parametrize("family", FAMILIES)
def test_random_transformers_model(family, hf_random_dir):
    path, model = hf_random_dir(family)
    with torch.no_grad():
        want = model(torch.tensor([IDS])).logits[0]
    prefill, decode = _ours(path, IDS)
    assert (prefill - want).abs().max().item() < TOL
    assert (decode - _transformers_decode(model, IDS)).abs().max().item() < TOL
    assert (decode - want).abs().max().item() < TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_ascend_tiny_loaded_by_transformers(family, tiny_dir):
    import transformers

    path = tiny_dir(family)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        want = model(torch.tensor([IDS])).logits[0]
    prefill, decode = _ours(path, IDS)
    assert (prefill - want).abs().max().item() < TOL
    assert (decode - want).abs().max().item() < TOL
    # the logits are not trivially equal across positions (a real model ran)
    assert (want[0] - want[-1]).abs().max().item() > 0.1


def test_dsa_really_selects(tiny_dir):
    """With 12 tokens and index_topk 4, the indexer masks keys: removing the mask changes logits."""
    from ascend.reference.model import ReferenceModel, Sequence

    model = ReferenceModel(tiny_dir("glm_moe_dsa"))
    sparse = model.logits(model.forward([Sequence()], [IDS]))
    for layer in model.layers:
        layer.attn.indexer = None
    dense = model.logits(model.forward([Sequence()], [IDS]))
    assert (sparse[:4] - dense[:4]).abs().max().item() < 1e-5  # <= topk keys: nothing masked
    assert (sparse[4:] - dense[4:]).abs().max().item() > 1e-3


@pytest.mark.parametrize("family", ["deepseek_v3", "glm4_moe"])
def test_mtp_head_matches_transformers_mtp_model(family, tiny_dir):
    """The MTP layer's next-token logits vs transformers' ``MtpModel`` (same forward as vLLM)."""
    import transformers
    from transformers.cache_utils import MtpCache
    from transformers.modeling_layers import MtpModel

    from ascend.reference import compute_mtp_logits

    path = tiny_dir(family)
    main = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    # transformers finds MTP weights by the published layer index (61 / 92 ...); point it at ours
    main._keys_to_ignore_on_load_unexpected = [rf"model\.layers\.{main.config.num_hidden_layers}\..*"]
    mtp = MtpModel.from_pretrained(main).eval()
    ids = torch.tensor([IDS])
    T = ids.shape[1]
    with torch.no_grad():
        hidden = main(ids, output_hidden_states=True).hidden_states[-1]
        # MtpModel.forward returns the last row only (it drafts one token); its own per-layer step
        # and shared head give every row
        h = mtp.forward_layer(0, hidden[:, :-1], torch.arange(1, T)[None],
                              MtpCache(config=main.config.get_mtp_config()), input_ids=ids[:, 1:])
        want = mtp._project_to_logits(h)[0]
    ours = compute_mtp_logits(path, IDS)
    assert ours.shape == want.shape == (T - 1, main.config.vocab_size)
    assert (ours - want).abs().max().item() < TOL  # every row, not only the last


@pytest.mark.parametrize("family", ["glm_moe_dsa", "deepseek_v32"])
def test_indexer_rope_style_is_family_specific(family, tiny_dir):
    """GLM-5's indexer RoPE is interleaved, DeepSeek-V3.2's is NeoX (final published code); the
    other style selects different keys and breaks parity, so the parity tests pin the choice."""
    import transformers

    from ascend.reference.model import ReferenceModel, Sequence

    path = tiny_dir(family)
    model = ReferenceModel(path)
    assert model.layers[0].attn.indexer.interleaved == (family == "glm_moe_dsa")
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        want = hf(torch.tensor([IDS])).logits[0]
    for layer in model.layers:
        layer.attn.indexer.interleaved = not layer.attn.indexer.interleaved
    swapped = model.logits(model.forward([Sequence()], [IDS]))
    assert (swapped - want).abs().max().item() > 1e-2
