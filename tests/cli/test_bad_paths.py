"""Output paths that cannot be written are bad input: exit 2 and one line naming the option and
the path, before any work starts (never "internal error").

Two kinds of unwritable path, both refused for root too: a directory under /proc (no files can
be created there) and a path whose parent is a regular file.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from ascend.tiny.writer import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "glm5", "glm_moe_dsa", layers=2)


def _commands(src: str, bad: str) -> list[tuple[str, list[str]]]:
    """(what the error names, argv) for every command that writes where the user says."""
    return [
        ("--out", ["convert", "--src", src, "--out", bad, "--precision", "bf16"]),
        ("convert.output", ["convert", "tiny/glm5-cpu", "--src", src, "--set", f"convert.output={bad}"]),
        ("--run-dir", ["run", "tiny/glm5-cpu", "--until", "plan", "--run-dir", bad]),
        ("--log-dir", ["serve", "tiny/glm5-cpu", "--log-dir", bad]),
        ("--json", ["smoke", "tiny/glm5-cpu", "--json", f"{bad}/smoke.json"]),
        ("--junit", ["smoke", "tiny/glm5-cpu", "--junit", f"{bad}/smoke.xml"]),
        ("OUT_DIR", ["tiny", f"{bad}/tiny", "--arch", "glm_moe_dsa"]),
        ("--out", ["logits", src, "--input-ids", "1,2", "--out", f"{bad}/logits.safetensors"]),
        ("--local-dir", ["fetch", "Org/Model", "--local-dir", bad]),
    ]


@pytest.mark.parametrize("kind", ["proc", "under-a-file"])
def test_unwritable_output_paths_exit_2_naming_the_path(cli, tiny_dir, tmp_path, kind):
    if kind == "proc":
        bad = "/proc/ascend-test-out"
    else:
        (tmp_path / "a-file").write_text("not a directory")
        bad = str(tmp_path / "a-file" / "out")
    for what, argv in _commands(str(tiny_dir), bad):
        res = cli(*argv)
        lines = res.err.strip().splitlines()
        assert res.code == 2, f"ascend {' '.join(argv)}: exit {res.code}: {res.err}"
        assert lines and lines[-1].startswith("error: ") and what in lines[-1], (argv, res.err)
        assert bad.split("/")[1] in lines[-1] or "a-file" in lines[-1], (argv, res.err)
        assert "internal error" not in res.err and "Traceback" not in res.err


def test_default_run_dir_in_an_unwritable_directory(cli, tmp_path, monkeypatch):
    (tmp_path / "runs").write_text("a file where runs/ would go")
    monkeypatch.chdir(tmp_path)
    res = cli("run", "tiny/glm5-cpu", "--until", "plan")
    assert res.code == 2 and "run directory (--run-dir default) runs/tiny-glm5-cpu" in res.err, res.err


def test_output_file_that_is_a_directory(cli, tiny_dir, tmp_path):
    res = cli("logits", str(tiny_dir), "--input-ids", "1,2", "--out", str(tmp_path))
    assert res.code == 2 and f"--out {tmp_path} is a directory" in res.err


def test_probe_leaves_nothing_behind(tmp_path):
    from ascend.paths import writable_dir, writable_file

    assert writable_dir(tmp_path / "new" / "dir", "--out") == tmp_path / "new" / "dir"
    writable_file(tmp_path / "x.json", "--json")
    assert list(tmp_path.iterdir()) == []  # nothing created, no probe file left
