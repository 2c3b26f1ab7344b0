"""W8A8 scheme from the command line and recipes: the flag, the recipe field, the xLLM refusal."""

import json

import pytest
from test_convert_cli import cli

from ascend.errors import RecipeError
from ascend.recipe import load_recipe

SHIPPED = ["glm5/a3-w8a8", "glm5/a2x2-w8a8", "deepseek-v3/a3-w8a8", "glm47/a3-w8a8"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipes_use_the_practice_scheme(name):
    r = load_recipe(name)
    assert r.serve.engine == "xllm" and r.convert.precision.default == "w8a8"
    assert r.convert.precision.w8a8_scheme == "w8a8"


@pytest.mark.parametrize("name", SHIPPED)
def test_xllm_recipe_with_dynamic_scheme_is_exit_2_with_why(name):
    with pytest.raises(RecipeError) as err:
        load_recipe(name, ["convert.precision.w8a8_scheme=dynamic"])
    assert err.value.exit_code == 2
    line = err.value.lines()[0]
    assert "w8a8_scheme" in line and "xLLM" in line and "use w8a8_scheme: w8a8" in line


def test_dynamic_scheme_is_fine_for_the_cpu_engine():
    r = load_recipe("tiny/glm5-cpu", ["convert.precision.w8a8_scheme=dynamic"])
    assert r.convert.precision.w8a8_scheme == "dynamic"


def test_flag_mode_scheme(ckpt_factory, tmp_path, capsys):
    src = ckpt_factory("glm4_moe")
    code, _, err = cli(capsys, "convert", "--src", src, "--out", tmp_path / "d", "--precision", "w8a8",
                       "--w8a8-scheme", "dynamic")
    assert code == 0, err
    desc = json.loads((tmp_path / "d" / "quant_model_description.json").read_text())
    assert desc["model_quant_type"] == "W8A8_DYNAMIC"
    code, _, err = cli(capsys, "convert", "--src", src, "--out", tmp_path / "x", "--precision", "w8a8",
                       "--w8a8-scheme", "w4a8")
    assert code == 2 and "'w4a8' is not one of 'w8a8', 'dynamic'" in err  # a usage error, as for every choice


def test_flag_mode_default_practice_calibrates_and_holds_the_default_gate(ckpt_factory, tmp_path, capsys):
    """Tiny random models miss the schema's default thresholds (0.02 rel-L2 per layer): exit 3, one
    error line naming the worst layers (the per-layer report lines come before it)."""
    src = ckpt_factory("glm4_moe")
    code, _, err = cli(capsys, "convert", "--src", src, "--out", tmp_path / "s", "--precision", "w8a8")
    assert code == 3 and "accuracy gate failed" in err and "worst layers" in err, err


def test_scheme_flag_is_flag_mode_only(capsys):
    code, _, err = cli(capsys, "convert", "glm5/a3-w8a8", "--w8a8-scheme", "dynamic", "--dry-run")
    assert code == 2 and "--w8a8-scheme is a flag-mode option" in err
