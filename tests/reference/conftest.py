"""Fixtures for the reference-model tests (``tiny_dir`` is in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def hf_random_dir(tmp_path_factory):
    """``hf_random_dir(family)`` -> a tiny random model built by transformers (``from_config``,
    every weight perturbed so no norm is 1 and the router bias is not 0) and saved with
    ``save_pretrained`` in several shards; returns (path, model)."""
    import torch
    import transformers

    from ascend.tiny.configs import tiny_config

    cache: dict = {}

    def make(family: str):
        if family not in cache:
            torch.manual_seed(1)
            config = transformers.AutoConfig.for_model(**tiny_config(family))
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.add_(torch.randn_like(p) * 0.05)
                    if "weights_proj" in name:  # see ascend/tiny/writer.py: avoid exact top-k ties
                        p.abs_()
                for name, b in model.named_buffers():
                    if name.endswith("e_score_correction_bias"):
                        b.copy_(torch.randn_like(b) * 0.1)
            path = tmp_path_factory.mktemp("hf") / family
            model.save_pretrained(path, max_shard_size="300KB")
            cache[family] = (path, model)
        return cache[family]

    return make
