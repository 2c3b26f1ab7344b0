"""Published configs by hub id and the recipe -> ModelArgs resolution order."""

from __future__ import annotations

import json

import pytest

from ascend.errors import RecipeError
from ascend.models import known_model_ids, model_args_for_recipe, published_config, published_model_args


def test_ids_resolve_case_insensitively_on_both_hubs():
    # deployments.md §5.1: ModelScope ZhipuAI/GLM-5(-FP8); HF zai-org/GLM-5(-FP8)
    for a, b in [("ZhipuAI/GLM-5-FP8", "zai-org/glm-5-fp8"), ("ZhipuAI/GLM-4.7", "zai-org/GLM-4.7")]:
        assert published_config(a) == published_config(b)
    assert published_model_args("deepseek-ai/deepseek-v3-0324").family == "deepseek_v3"
    assert published_model_args("deepseek-ai/DeepSeek-V3.2-Exp").family == "deepseek_v32"
    assert published_model_args("nobody/unknown") is None
    assert len(known_model_ids()) == len(set(i.lower() for i in known_model_ids()))


def test_published_configs_are_copies():
    cfg = published_config("ZhipuAI/GLM-5")
    cfg["hidden_size"] = 1
    assert published_config("ZhipuAI/GLM-5")["hidden_size"] == 6144


def test_glm46_and_47_share_glm45_architecture():
    # checkpoints.md §1.1: GLM-4.6 / 4.7 are 355B-A32B on the same glm4_moe code; MTP copies absent in 4.6
    a45, a47 = published_model_args("ZhipuAI/GLM-4.5"), published_model_args("ZhipuAI/GLM-4.7")
    assert (a47.hidden_size, a47.num_hidden_layers, a47.n_routed_experts) == (a45.hidden_size, 92, 160)
    assert a45.mtp_has_copies and not a47.mtp_has_copies


def test_recipe_resolution_order(tmp_path):
    # 1. config.json under model.path wins over the published config of model.id
    cfg = published_config("ZhipuAI/GLM-4.5-Air")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    got = model_args_for_recipe({"family": "glm4_moe", "id": "ZhipuAI/GLM-4.5", "path": str(tmp_path)})
    assert got.hidden_size == 4096
    # 2. no config on disk: the published config by id
    got = model_args_for_recipe({"family": "glm4_moe", "id": "ZhipuAI/GLM-4.5", "path": str(tmp_path / "none")})
    assert got.hidden_size == 5120
    # 3. tiny: the reference-models area's tiny_config, with the recipe's options
    got = model_args_for_recipe({"family": "deepseek_v3", "source": "tiny", "path": str(tmp_path / "none"),
                                 "tiny": {"layers": 2, "fp8": True, "seed": 3, "scripted": False}})
    assert got.family == "deepseek_v3" and got.num_hidden_layers == 2 and got.fp8_block == (128, 128)


def test_recipe_resolution_errors(tmp_path):
    with pytest.raises(RecipeError) as err:
        model_args_for_recipe({"family": "glm_moe_dsa", "id": "ZhipuAI/GLM5-FP8", "path": str(tmp_path)})
    assert "did you mean model.id 'ZhipuAI/GLM-5-FP8'" in err.value.line()
    with pytest.raises(RecipeError, match="model.family is 'glm4_moe'"):
        model_args_for_recipe({"family": "glm4_moe", "id": "ZhipuAI/GLM-5", "path": str(tmp_path)})
