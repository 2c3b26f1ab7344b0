"""What `ascend doctor RECIPE` checks for, derived from built-in recipes (no host access)."""

from __future__ import annotations

from ascend.doctor import target_from_recipe
from ascend.models import model_args_for_recipe, param_counts
from ascend.recipe import load_recipe


def test_a3_recipe_target():
    recipe = load_recipe("glm5/a3-w8a8")
    target = target_from_recipe(recipe, "glm5/a3-w8a8")
    assert (target.chip, target.devices_per_node, target.engine, target.xllm_binary) == ("ascend-a3", 16, "xllm", "xllm")
    assert target.device_memory_mb == 65536  # 64 GiB per die, what npu-smi reports for A3
    assert target.ports == list(range(recipe.serve.port, recipe.serve.port + 16)) + [recipe.serve.master_port]
    assert target.convert_output == recipe.convert.output and target.convert_workers == recipe.convert.workers
    assert target.env == recipe.serve.env
    tuned = load_recipe("glm5/a3-w8a8", ["serve.env.HCCL_BUFFSIZE=300"])
    assert target_from_recipe(tuned, "glm5/a3-w8a8").env["HCCL_BUFFSIZE"] == "300"


def test_output_size_follows_the_precision_rules():
    bf16 = load_recipe("glm5/a3x2-bf16")
    w8a8 = load_recipe("glm5/a3-w8a8")
    counts = param_counts(model_args_for_recipe(bf16.model))
    mtp = 0 if bf16.convert.mtp == "drop" else counts.mtp
    # everything BF16, but for the fp32 router biases (4 B each; a few thousand values)
    assert 0 <= target_from_recipe(bf16).output_bytes - 2 * (counts.total + mtp) < 1e5
    quantized = target_from_recipe(w8a8).output_bytes
    experts = counts.by_component.get("routed_expert", 0)
    # W8A8 experts take 1 byte instead of 2: the saving is at least the routed experts' size
    assert quantized <= 2 * (counts.total + counts.mtp) - experts
    assert quantized > counts.total + counts.mtp
