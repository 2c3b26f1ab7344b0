"""Checkpoints saved by transformers itself (what every HF fine-tune produces) convert.

transformers' ``save_pretrained`` leaves the MTP layer out but keeps ``num_nextn_predict_layers``
in config.json. ``--mtp keep`` (default, with a warning) and ``--mtp drop`` convert without MTP
and write config.json to match; ``--mtp export`` is refused (exit 2). The oracle for the output
is transformers again: it loads the converted directory and gives the original model's logits.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from test_convert_cli import assert_one_line_error, cli

FAMILIES = ("deepseek_v3", "glm4_moe", "glm_moe_dsa")
IDS = [[17, 250, 3, 999, 42, 511, 8, 700]]
NO_MTP = "no MTP weights: this looks like a transformers-saved checkpoint"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """saved(family) -> (dir written by save_pretrained, its logits on IDS)."""
    import transformers

    from ascend.tiny.configs import tiny_config

    cache: dict = {}

    def make(family: str):
        if family not in cache:
            torch.manual_seed(0)
            config = transformers.AutoConfig.for_model(**tiny_config(family, mtp=True))
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
            path = tmp_path_factory.mktemp("hf-saved") / family
            model.save_pretrained(path, max_shard_size="300KB")
            with torch.no_grad():
                cache[family] = (path, model(torch.tensor(IDS)).logits)
        return cache[family]

    return make


def stored_names(path) -> set[str]:
    return set(json.loads((path / "model.safetensors.index.json").read_text())["weight_map"])


def transformers_logits(path) -> torch.Tensor:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        return model(torch.tensor(IDS)).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_default_keep_converts_without_mtp_and_warns(family, saved, tmp_path, capsys):
    src, want = saved(family)
    cfg = json.loads((src / "config.json").read_text())
    layers = cfg["num_hidden_layers"]
    # the premise: transformers kept the MTP count but stored no MTP tensor
    assert cfg["num_nextn_predict_layers"] == 1
    assert not any(n.startswith(f"model.layers.{layers}.") for n in stored_names(src))
    out = tmp_path / "out"
    code, _, err = cli(capsys, "convert", "--src", src, "--out", out, "--precision", "bf16")
    assert code == 0, err
    assert f"warning: {NO_MTP}" in err
    assert json.loads((out / "config.json").read_text())["num_nextn_predict_layers"] == 0
    assert stored_names(out) == stored_names(src)
    assert torch.equal(transformers_logits(out), want)  # BF16 copy: bit-identical model
    code, stdout, err = cli(capsys, "verify", out)
    assert code == 0, stdout + err


def test_drop_converts_without_a_warning(saved, tmp_path, capsys):
    src, want = saved("glm4_moe")
    out = tmp_path / "out"
    code, _, err = cli(capsys, "convert", "--src", src, "--out", out, "--precision", "bf16", "--mtp", "drop")
    assert code == 0, err
    assert "warning" not in err
    assert json.loads((out / "config.json").read_text())["num_nextn_predict_layers"] == 0
    assert torch.equal(transformers_logits(out), want)


def test_sharded_layout_records_no_mtp(saved, tmp_path, capsys):
    src, _ = saved("deepseek_v3")
    out = tmp_path / "out"
    code, _, err = cli(capsys, "convert", "--src", src, "--out", out, "--precision", "bf16", "--layout", "sharded",
                       "--tp", "2", "--ep", "2")
    assert code == 0, err
    assert json.loads((out / "ascend-sharding.json").read_text())["mtp"] == "drop"
    assert json.loads((out / "config.json").read_text())["num_nextn_predict_layers"] == 0


def test_export_is_refused(saved, tmp_path, capsys):
    src, _ = saved("glm_moe_dsa")
    code, _, err = cli(capsys, "convert", "--src", src, "--out", tmp_path / "out", "--precision", "bf16", "--mtp", "export")
    assert_one_line_error(code, err, NO_MTP, "--mtp drop")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_partly_missing_mtp_layer_is_still_an_error(ckpt_factory, tmp_path, capsys):
    """Only an MTP layer missing as a whole is a transformers save; a hole in it is damage."""
    from safetensors.torch import load_file, save_file

    src = tmp_path / "src"
    shutil.copytree(ckpt_factory("deepseek_v3"), src)
    index = json.loads((src / "model.safetensors.index.json").read_text())
    victim = "model.layers.3.eh_proj.weight"
    shard = src / index["weight_map"].pop(victim)
    tensors = load_file(str(shard))
    del tensors[victim]
    save_file(tensors, str(shard), metadata={"format": "pt"})
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    code, _, err = cli(capsys, "convert", "--src", src, "--out", tmp_path / "out", "--precision", "bf16", "--mtp", "drop")
    assert_one_line_error(code, err, "disagrees with its config.json", victim)
    assert NO_MTP not in err
