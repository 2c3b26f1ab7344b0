"""Recipe loading: schema, inheritance, overrides, env references, error lines, built-ins."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ascend.errors import RecipeError
from ascend.recipe import builtin_names, builtin_root, load_recipe, recipe_hash

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p for p in (REPO / "recipes").rglob("*.yaml") if not any(part.startswith("_") for part in p.relative_to(REPO / "recipes").parts))

MINIMAL = """\
name: t
model: {family: glm_moe_dsa, source: local, path: /m}
hardware: {chip: ascend-a3, devices_per_node: 16}
parallel: {dp: 1, ep: 16}
convert: {output: /o}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(ref, overrides=()) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(ref, overrides)
    return info.value.lines()


def test_shipped_recipes_are_found_recursively():
    assert len(SHIPPED) >= 9
    names = builtin_names()
    for path in SHIPPED:
        assert path.relative_to(REPO / "recipes").with_suffix("").as_posix() in names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(REPO / "recipes").as_posix())
def test_every_shipped_recipe_validates_and_documents_how_to_run_it(path, cli):
    result = cli("validate", str(path))
    assert result.code == 0, result.err
    head = path.read_text().splitlines()[:6]
    name = path.relative_to(REPO / "recipes").with_suffix("").as_posix()
    assert any(line.startswith("#   ascend ") and name in line for line in head), "header must show the exact command"
    assert any("--set" in line for line in head), "header must show one override example"


def test_builtin_name_and_path_give_the_same_recipe():
    by_name = load_recipe("glm5/a3-w8a8")
    by_path = load_recipe(builtin_root() / "glm5" / "a3-w8a8.yaml")
    assert by_name.model_dump() == by_path.model_dump()
    assert by_name.layout.world == 16 and by_name.layout.attn_tp == 16 and by_name.layout.moe_tp == 1


def test_base_inheritance_merges_deeply_and_later_keys_win():
    recipe = load_recipe("glm5/a3-w8a8")
    assert recipe.model.id == "ZhipuAI/GLM-5-FP8"  # from the base
    assert recipe.model.path == "/data/models/GLM-5-FP8"  # from the child, same section
    assert recipe.serve.tool_call_parser == "glm5" and recipe.serve.max_model_len == 40960


def test_unknown_key_suggests_the_right_one_with_file_and_line(tmp_path):
    path = write(tmp_path, "r.yaml", MINIMAL.replace("parallel: {dp: 1, ep: 16}", "parallel:\n  dp: 1\n  epp: 16"))
    (line,) = problems_of(path)
    assert line.startswith(f"{path.resolve()}:6: parallel.epp: unknown key")
    assert "did you mean 'ep'?" in line


def test_all_errors_are_reported_at_once(tmp_path):
    text = MINIMAL.replace("devices_per_node: 16", "devices_per_node: sixteen").replace("chip: ascend-a3", "chip: ascend-a5")
    text += "servee: {}\n"
    lines = problems_of(write(tmp_path, "r.yaml", text))
    assert len(lines) == 3
    joined = "\n".join(lines)
    assert "hardware.devices_per_node" in joined and "'sixteen'" in joined
    assert "hardware.chip: 'ascend-a5' is not allowed — did you mean 'ascend-a3'?" in joined
    assert "servee: unknown key — did you mean 'serve'?" in joined


def test_missing_required_key_names_the_section(tmp_path):
    (line,) = problems_of(write(tmp_path, "r.yaml", MINIMAL.replace("convert: {output: /o}\n", "")))
    assert "convert: required key is missing" in line


def test_divisibility_errors_carry_the_numbers(tmp_path):
    lines = problems_of(write(tmp_path, "r.yaml", MINIMAL.replace("ep: 16", "ep: 6").replace("dp: 1", "dp: 3")))
    assert any("parallel.dp: 3 does not divide world size 16 (1 node(s) × 16 devices_per_node)" in l for l in lines)
    assert any("parallel.ep: 6 does not divide world size 16" in l and "[1, 2, 4, 8, 16]" in l for l in lines)


def test_hosts_must_match_nodes(tmp_path):
    text = MINIMAL.replace("devices_per_node: 16}", "devices_per_node: 16, nodes: 2, hosts: [a]}")
    (line,) = problems_of(write(tmp_path, "r.yaml", text))
    assert "hardware.hosts: 1 host(s) listed for 2 node(s)" in line


def test_port_range_is_checked(tmp_path):
    (line,) = problems_of(write(tmp_path, "r.yaml", MINIMAL + "serve: {port: 70000}\n"))
    assert "serve.port" in line and "70000" in line


def test_base_cycle_is_detected(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\nname: a\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    (line,) = problems_of(tmp_path / "a.yaml")
    assert "inheritance cycle" in line and "a.yaml" in line and "b.yaml" in line


def test_missing_base_file_and_missing_recipe(tmp_path):
    (line,) = problems_of(write(tmp_path, "r.yaml", "base: nope.yaml\n" + MINIMAL))
    assert "base: file" in line and "nope.yaml does not exist" in line
    with pytest.raises(RecipeError) as info:
        load_recipe("glm5/a3-w8a9")
    assert "did you mean 'glm5/a3-w8a8'?" in info.value.line()


def test_overrides_use_yaml_typing_and_are_named_in_errors():
    recipe = load_recipe("glm5/a3-w8a8", ["serve.max_model_len=65536", "hardware.hosts=[10.0.0.1]", "serve.env.FOO=bar"])
    assert recipe.serve.max_model_len == 65536
    assert recipe.hardware.hosts == ["10.0.0.1"]
    assert recipe.serve.env == {"FOO": "bar"}
    assert load_recipe("glm5/a3-w8a8", ["serve.version=0.10"]).serve.version == "0.10"  # text field keeps its text
    assert load_recipe("glm5/a3-w8a8", ["serve.env.HCCL_BUFFSIZE=512"]).serve.env == {"HCCL_BUFFSIZE": "512"}
    lines = problems_of("glm5/a3-w8a8", ["parallel.ep=5"])
    assert lines[0].startswith("--set parallel.ep=5: parallel.ep: 5 does not divide")
    (line,) = problems_of("glm5/a3-w8a8", ["serve.port"])
    assert "expected KEY=VALUE" in line


def test_env_references_only_in_the_explicit_form(tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_ROOT", "/nvme/models")
    recipe = load_recipe(write(tmp_path, "r.yaml", MINIMAL.replace("path: /m", "path: '${env:MODEL_ROOT}/glm5'").replace("/o", "$HOME/out")))
    assert recipe.model.path == "/nvme/models/glm5"
    assert recipe.convert.output == "$HOME/out"  # only ${env:NAME} is expanded
    monkeypatch.delenv("MODEL_ROOT")
    (line,) = problems_of(tmp_path / "r.yaml")
    assert "model.path: environment variable MODEL_ROOT is not set" in line


def test_duplicate_keys_and_bad_yaml_are_reported_with_lines(tmp_path):
    (line,) = problems_of(write(tmp_path, "r.yaml", MINIMAL + "convert: {output: /p}\n"))
    assert ":6: convert: key appears twice" in line
    (line,) = problems_of(write(tmp_path, "bad.yaml", "name: [unclosed\n"))
    assert "not valid YAML" in line


def test_speculative_mtp_on_xllm_requires_exported_draft(tmp_path):
    text = MINIMAL + "serve: {speculative: {method: mtp, num_tokens: 1}}\n"
    (line,) = problems_of(write(tmp_path, "r.yaml", text))
    assert "convert.mtp: is 'keep'" in line and "convert.mtp: export" in line


def test_recipe_hash_tracks_the_sections_a_stage_depends_on():
    base = load_recipe("glm5/a3-w8a8")
    other_port = load_recipe("glm5/a3-w8a8", ["serve.port=9000"])
    sections = ["model", "parallel", "hardware", "convert"]
    assert recipe_hash(base, sections) == recipe_hash(other_port, sections)
    assert recipe_hash(base) != recipe_hash(other_port)


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["validate", "glm5/a3-w8a8", "--set", "parallel.epp=4"], 2, "did you mean 'ep'?"),
        (["show", "nope/none"], 2, "no recipe file or built-in recipe named 'nope/none'"),
        (["validate", "glm5/a3-w8a8", "--set", "hardware.chip=ascend-910c"], 2, "hardware.chip"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(cli, args, code, needle):
    result = cli(*args)
    assert result.code == code
    assert needle in result.err
    assert "Traceback" not in result.err
    assert all(line.startswith("error: ") for line in result.err.strip().splitlines())


def test_show_prints_the_resolved_recipe(cli):
    import yaml

    result = cli("show", "glm5/a3-w8a8", "--set", "serve.port=8000")
    data = yaml.safe_load(result.out)
    assert result.code == 0 and data["serve"]["port"] == 8000 and data["model"]["family"] == "glm_moe_dsa"
    assert "base" not in data


def test_recipes_lists_every_builtin(cli):
    import json

    result = cli("recipes", "--json")
    rows = json.loads(result.out)
    assert [row["name"] for row in rows] == builtin_names()
    assert {"glm5/a3-w8a8", "glm5/a3x2-bf16", "glm5/a2x2-w8a8", "deepseek-v3/a3-w8a8", "glm47/a3-w8a8", "tiny/glm5-cpu"} <= {r["name"] for r in rows}
