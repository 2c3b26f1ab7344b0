"""Advice the CLI prints is right for the command that printed it, and runs."""

from __future__ import annotations

import re
import shlex

import pytest

from ascend.recipe import builtin_root


def test_run_advises_a_force_that_exists_and_works(cli, tmp_path):
    from ascend.tiny.writer import write_tiny_checkpoint

    src = write_tiny_checkpoint(tmp_path / "src", "glm_moe_dsa", fp8=True, layers=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("someone else's file")
    run_dir = tmp_path / "run"
    res = cli("run", "tiny/glm5-cpu", "--from", "convert", "--until", "convert", "--run-dir", str(run_dir),
              "--set", f"model.path={src}", "--set", f"convert.output={out}",
              "--set", "convert.precision.default=bf16")  # a random model: no calibration gate to meet
    assert res.code == 2, res.err
    assert "pass --force" not in res.err  # `ascend run` has no --force
    advice = re.search(r"`(ascend convert [^`]+ --force)`", res.err)
    assert advice, res.err
    again = cli(*shlex.split(advice.group(1))[1:])
    assert again.code == 0, again.err
    assert (out / "ascend-manifest.json").is_file()


def test_verify_names_a_missing_directory(cli, tmp_path):
    res = cli("verify", str(tmp_path / "nope"))
    assert res.code == 2
    assert f"{tmp_path / 'nope'} does not exist" in res.err and "did not finish" not in res.err


def test_verify_tells_a_foreign_directory_from_an_unfinished_conversion(cli, tmp_path, tiny_dir):
    res = cli("verify", str(tmp_path))  # a directory no conversion ever wrote to
    assert res.code == 2 and "not an ascend convert output" in res.err and "did not finish" not in res.err
    out = tmp_path / "out"
    assert cli("convert", "--src", str(tiny_dir("glm4_moe", layers=2)), "--out", str(out), "--precision", "bf16").code == 0
    for damaged in ('{"files": ', "[]"):  # the manifest damaged after the conversion
        (out / "ascend-manifest.json").write_text(damaged)
        res = cli("verify", str(out))
        assert res.code == 3 and "ascend-manifest.json: unreadable" in res.err and "internal error" not in res.err
    (out / "ascend-manifest.json").unlink()  # as if the conversion had stopped before its last step
    res = cli("verify", str(out))
    assert res.code == 3 and "did not finish" in res.err


def test_serve_without_a_conversion_says_convert_first(cli, tmp_path):
    res = cli("serve", "tiny/glm5-cpu", "--set", f"convert.output={tmp_path / 'none'}", "--log-dir", str(tmp_path / "logs"))
    assert res.code == 2
    assert "run `ascend convert tiny/glm5-cpu` first" in res.err and "does not exist" in res.err
    assert not (tmp_path / "logs" / "rank-0.log").exists()  # nothing was started


def test_readme_validate_of_every_recipe_file_passes(cli):
    files = sorted(str(p) for p in builtin_root().glob("*/*.yaml"))  # what `recipes/*/*.yaml` expands to
    assert any("/_base/" in f for f in files)
    res = cli("validate", *files)
    assert res.code == 0, res.err
    assert res.out.count("ok: ") == len(files)


@pytest.mark.parametrize(("text", "expected"), [
    ("serve:\n  prot: 1\n", "serve.prot: unknown key — did you mean 'port'?"),
    ("serve:\n  port: many\n", "serve.port: Input should be a valid integer"),
])
def test_partial_recipes_are_checked_for_keys_and_types(cli, tmp_path, text, expected):
    partial = tmp_path / "_base" / "mine.yaml"
    partial.parent.mkdir()
    partial.write_text(text)
    res = cli("validate", str(partial))
    assert res.code == 2 and expected in res.err, res.err


def test_partial_recipes_need_not_be_complete(cli, tmp_path):
    partial = tmp_path / "_base" / "mine.yaml"
    partial.parent.mkdir()
    partial.write_text("serve:\n  port: 19000\n")  # no name, no model: the including recipe has them
    res = cli("validate", str(partial))
    assert res.code == 0 and "partial" in res.out, res.err
