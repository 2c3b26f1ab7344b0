"""Bad input: one-line CheckpointError naming the file and tensor; exit code 2 via the CLI."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from ascend.errors import CheckpointError


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _rewrite(path, file: str, edit) -> None:
    tensors = load_file(str(path / file))
    edit(tensors)
    save_file(tensors, str(path / file))


def _file_of(path, name: str) -> str:
    return json.loads((path / "model.safetensors.index.json").read_text())["weight_map"][name]


def _error(path) -> str:
    from ascend.reference import compute_logits

    with pytest.raises(CheckpointError) as exc:
        compute_logits(path, [1, 2, 3])
    line = exc.value.line()
    assert "\n" not in line
    return line


def test_no_config(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    assert "config.json" in _error(tmp_path / "empty")
    res = cli("logits", str(tmp_path / "empty"), "--input-ids", "1,2", "--out", str(tmp_path / "l.safetensors"))
    assert res.code == 2 and res.err.startswith("error: ") and "config.json" in res.err
    assert len(res.err.strip().splitlines()) == 1 and not (tmp_path / "l.safetensors").exists()


def test_unknown_model_type(tiny_dir, tmp_path):
    path = _copy(tiny_dir("glm4_moe"), tmp_path / "c")
    cfg = json.loads((path / "config.json").read_text())
    cfg["model_type"] = "llama"
    (path / "config.json").write_text(json.dumps(cfg))
    line = _error(path)
    assert "llama" in line and "config.json" in line


def test_missing_tensor(tiny_dir, tmp_path, cli):
    path = _copy(tiny_dir("glm4_moe"), tmp_path / "c")
    name = "model.layers.1.self_attn.k_proj.weight"
    file = _file_of(path, name)
    _rewrite(path, file, lambda t: t.pop(name))
    index = json.loads((path / "model.safetensors.index.json").read_text())
    del index["weight_map"][name]
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    line = _error(path)
    assert name in line and "model.safetensors.index.json" in line
    res = cli("logits", str(path), "--input-ids", "1,2", "--out", str(tmp_path / "l.safetensors"))
    assert res.code == 2 and name in res.err


def test_shape_mismatch(tiny_dir, tmp_path):
    path = _copy(tiny_dir("glm_moe_dsa"), tmp_path / "c")
    name = "model.layers.2.self_attn.kv_b_proj.weight"
    file = _file_of(path, name)
    _rewrite(path, file, lambda t: t.__setitem__(name, t[name][:-1].clone()))
    line = _error(path)
    assert name in line and file in line and "shape" in line


def test_bad_token_ids(tiny_dir, cli, tmp_path):
    from ascend.errors import AscendError
    from ascend.reference import compute_logits

    with pytest.raises(AscendError, match="outside the vocabulary"):
        compute_logits(tiny_dir("glm4_moe"), [1, 5000])
    res = cli("logits", str(tiny_dir("glm4_moe")), "--input-ids", "1,x", "--out", str(tmp_path / "l.safetensors"))
    assert res.code == 2 and "--input-ids" in res.err


def test_impossible_layout_is_refused_before_spawning(tiny_dir, cli, tmp_path):
    from ascend.errors import PlanError
    from ascend.reference import compute_logits

    with pytest.raises(PlanError, match="does not divide 8 heads"):
        compute_logits(tiny_dir("glm4_moe"), [1, 2], ranks=3)
    res = cli("logits", str(tiny_dir("glm4_moe")), "--input-ids", "1,2", "--ranks", "4", "--dp", "3",
              "--out", str(tmp_path / "l.safetensors"))
    assert res.code == 2 and "dp = 3" in res.err
