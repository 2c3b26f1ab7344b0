"""`ascend fetch` end to end through the CLI entry point (exit codes, --json, --offline)."""

from __future__ import annotations

import json
import sys

import pytest
from fake_modelscope import MODEL_ID

from ascend.cli.main import main

SHARD = "model-00002-of-00003.safetensors"


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code or 0, out, err


def test_cli_partial_exit_3_then_resume_exit_0(hub, tmp_path, capsys):
    out_dir = tmp_path / "out"
    argv = ["fetch", MODEL_ID, "--local-dir", str(out_dir), "--endpoint", hub.endpoint]
    hub.faults[SHARD] = ["cut"] * 10
    code, out, err = run(argv, capsys)
    assert code == 3
    assert "INCOMPLETE" in out and SHARD in out and "resumable partial file" in out
    assert err.startswith("error: ") and "rerun the same command to resume" in err

    code, out, _ = run(argv + ["--offline"], capsys)
    assert code == 3 and SHARD in out

    hub.faults.clear()
    code, out, err = run(argv + ["--checksum", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["complete"] and data["revision"] == "master" and data["requested"] == [SHARD]
    assert data["report"]["checked_sha256"] == len(hub.files)


def test_cli_needs_local_dir_for_a_model_id(capsys):
    code, _, err = run(["fetch", MODEL_ID, "--source", "modelscope"], capsys)
    assert code == 2 and "--local-dir" in err


def test_cli_unknown_repo_is_exit_2(hub, tmp_path, capsys):
    code, _, err = run(["fetch", "nobody/nothing", "--local-dir", str(tmp_path / "x"), "--endpoint", hub.endpoint], capsys)
    assert code == 2 and "cannot list nobody/nothing@master" in err


@pytest.mark.parametrize("bad", ["a b/c", "../../etc", "org/name/extra", "org/", "ZhipuAI/GLM-5?rev=1"])
def test_cli_refuses_what_is_no_model_id_before_the_network(hub, tmp_path, capsys, bad):
    code, _, err = run(["fetch", bad, "--local-dir", str(tmp_path / "x"), "--endpoint", hub.endpoint], capsys)
    assert code == 2 and f"{bad!r} is not a hub model id" in err
    assert not (tmp_path / "x").exists() and not hub.requests  # no directory made, no request sent


def test_huggingface_without_the_extra_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    code, _, err = run(["fetch", "zai-org/GLM-5", "--source", "huggingface", "--local-dir", str(tmp_path)], capsys)
    assert code == 2 and "pip install 'ascend-recipes[hf]'" in err


def test_cli_fetch_from_a_recipe(hub, tmp_path, capsys):
    src = tmp_path / "models" / "tiny"
    recipe = tmp_path / "fetch-test.yaml"
    recipe.write_text(
        "name: fetch-test\n"
        f"model: {{family: glm_moe_dsa, id: {MODEL_ID}, source: modelscope, path: {src}}}\n"
        "hardware: {chip: cpu, nodes: 1, devices_per_node: 1}\n"
        f"convert: {{output: {tmp_path / 'out'}}}\n"
        "serve: {engine: cpu}\n"
    )
    code, out, err = run(["fetch", str(recipe), "--endpoint", hub.endpoint], capsys)
    assert code == 0, err
    assert f"{MODEL_ID} [modelscope] @ master -> {src}" in out and "complete: 5 files complete" in out
    code, out, _ = run(["fetch", str(recipe), "--offline", "--checksum"], capsys)
    assert code == 0 and "sha256 verified for 5" in out
