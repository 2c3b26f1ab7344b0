"""The plan tells the truth about W8A8: the weight bytes ``ascend plan`` places on the ranks (and the
output size ``ascend doctor`` expects) equal the bytes a conversion with the family's practice
scheme writes (static W8A8 attention from calibration, dynamic MLP, float where the practice says),
counted from the output files with the official ``safetensors`` library."""

from pathlib import Path

import pytest
from safetensors import safe_open

from ascend.convert.jobs import ConvertOptions
from ascend.convert.pipeline import convert
from ascend.doctor import estimate_output_bytes
from ascend.plan.planner import plan_recipe
from ascend.recipe import load_recipe

# tiny recipe per family (model.path points at the test's checkpoint)
RECIPES = {"glm4_moe": "tiny/glm47-cpu", "deepseek_v3": "tiny/deepseek-v3-cpu", "glm_moe_dsa": "tiny/glm5-cpu"}
GATE_OFF = [f"convert.calibration.thresholds.{k}=null" for k in ("layer_rel_l2", "logits_kl", "top1", "logits_rel_err")]


def file_bytes(f: Path) -> int:
    """Sum of the nbytes of every tensor in the safetensors file ``f``."""
    with safe_open(str(f), framework="pt") as h:
        return sum(h.get_tensor(k).nbytes for k in h.keys())


def written_bytes(d: Path) -> int:
    return sum(file_bytes(f) for f in d.glob("*.safetensors"))


def w8a8_recipe(family: str, src: Path, out: Path, *sets: str):
    """The family's tiny recipe made all-W8A8 with the practice scheme (a small calibration, gate off);
    GLM-4.x exports its MTP layer as the draft and serves it (its practice leaves it float); the
    MLA families drop it (this tree's calibration does not cover the MTP layer)."""
    mtp = ["convert.mtp=export", "serve.speculative={method: mtp, num_tokens: 1}"] if family == "glm4_moe" \
        else ["convert.mtp=drop"]
    return load_recipe(RECIPES[family], [
        f"model.path={src}", f"convert.output={out}", "convert.precision.default=w8a8", "convert.precision.rules=[]",
        "convert.precision.w8a8_scheme=w8a8", "convert.calibration.samples=9", "convert.calibration.max_len=24",
        *GATE_OFF, *mtp, *sets])


def run_convert(recipe) -> Path:
    out = Path(recipe.convert.output)
    result = convert(recipe.model.path, out, ConvertOptions.from_recipe(recipe), calibration=recipe.convert.calibration)
    assert result.complete
    return out


@pytest.mark.parametrize("family,fp8", [("glm4_moe", False), ("deepseek_v3", False), ("glm_moe_dsa", True)])
def test_one_rank_plan_and_doctor_equal_the_written_hf_output(ckpt_factory, tmp_path, family, fp8):
    src = ckpt_factory(family, fp8=fp8)
    recipe = w8a8_recipe(family, src, tmp_path / "out", "convert.layout=hf", "hardware.devices_per_node=1",
                         "parallel.ep=1")
    out = run_convert(recipe)
    written = written_bytes(out) + (written_bytes(out / "mtp") if family == "glm4_moe" else 0)
    plan = plan_recipe(recipe)
    assert [d.ranks for d in plan.devices] == [[0]]
    assert plan.devices[0].weights_total == written
    assert estimate_output_bytes(recipe)[0] == written


@pytest.mark.parametrize("family", ["glm4_moe", "deepseek_v3"])
def test_per_rank_plan_equals_each_sharded_rank_file(ckpt_factory, tmp_path, family):
    """TP2 x EP2 (the tiny recipes' layout): every rank's planned weights equal its rank file."""
    src = ckpt_factory(family)
    recipe = w8a8_recipe(family, src, tmp_path / "out", *(["convert.mtp=keep"] if family == "glm4_moe" else []))
    out = run_convert(recipe)
    plan = plan_recipe(recipe)
    planned = {r: d.weights_total for d in plan.devices for r in d.ranks}
    assert planned == {r: file_bytes(out / f"model-rank-{r:05d}-of-00002.safetensors") for r in range(2)}
