"""Without the ``mindspore`` extra, every MindSpore entry point fails with one actionable line.

Runs in every environment: the import failure is forced, so it also runs where MindSpore is
installed.
"""

from __future__ import annotations

import sys

import pytest

from ascend.errors import BackendUnavailable


@pytest.fixture
def no_mindspore(monkeypatch):
    monkeypatch.setitem(sys.modules, "mindspore", None)  # makes `import mindspore` raise ImportError


def _assert_install_line(err: BackendUnavailable) -> None:
    line = err.line()
    assert "\n" not in line
    assert 'pip install "ascend-recipes[mindspore]"' in line
    assert err.exit_code == 2


def test_require_mindspore_names_the_extra(no_mindspore):
    from ascend.interop.mindspore.io import require_mindspore

    with pytest.raises(BackendUnavailable) as info:
        require_mindspore()
    _assert_install_line(info.value)
    assert info.value.line().startswith("MindSpore checkpoints need the 'mindspore' package, which is not installed")


def test_read_and_write_fail_before_touching_files(no_mindspore, tmp_path):
    import torch

    from ascend.interop.mindspore.io import read_mindspore, write_mindspore
    from ascend.interop.mindspore.layout import MindSporeSource

    with pytest.raises(BackendUnavailable) as info:
        read_mindspore(tmp_path / "missing.safetensors")
    _assert_install_line(info.value)
    with pytest.raises(BackendUnavailable) as info:
        write_mindspore(tmp_path / "x.safetensors", {"w": torch.zeros(2)})
    _assert_install_line(info.value)
    with pytest.raises(BackendUnavailable):
        MindSporeSource(tmp_path)
    assert list(tmp_path.iterdir()) == []



def _run_cli(capsys, *argv) -> tuple[int, str, str]:
    from ascend.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main([*map(str, argv)])
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _assert_install_error(code: int, err: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: MindSpore checkpoints need"), err
    assert 'pip install "ascend-recipes[mindspore]"' in lines[0]


def test_convert_and_verify_cli_name_the_extra(no_mindspore, tmp_path, capsys):
    import json
    from dataclasses import asdict

    from ascend.convert.jobs import ConvertOptions

    ms = tmp_path / "ms"
    ms.mkdir()
    (ms / "model.ckpt").write_bytes(b"\0" * 16)
    for layout in ("hf", "sharded"):
        code, _, err = _run_cli(capsys, "convert", "--src", ms, "--from-format", "mindspore", "--out", tmp_path / "out",
                                "--precision", "bf16", "--layout", layout)
        _assert_install_error(code, err)
    code, _, err = _run_cli(capsys, "convert", "--src", ms, "--out", tmp_path / "out", "--precision", "bf16",
                            "--layout", "mindspore")  # HF in, MindSpore out: also needs the extra
    _assert_install_error(code, err)
    assert not (tmp_path / "out").exists()
    # an output converted from MindSpore elsewhere: verify needs the extra to read the source
    out = tmp_path / "converted"
    out.mkdir()
    (out / "ascend-manifest.json").write_text(json.dumps({
        "format": "ascend-manifest/1", "files": {}, "plan_digest": "x",
        "source": {"path": str(ms), "fingerprint": "x"},
        "options": asdict(ConvertOptions.from_flags(source_format="mindspore"))}))
    _assert_install_error(*_run_cli(capsys, "verify", out)[::2])


def _have_mindspore() -> bool:
    from ascend.interop.mindspore.io import require_mindspore

    try:
        require_mindspore()
    except BackendUnavailable:
        return False
    return True


@pytest.mark.skipif(_have_mindspore(), reason="the installed command lacks MindSpore only where the extra is not installed")
def test_installed_command_without_the_extra(tmp_path):
    """The real ``ascend`` entry point, in an environment without MindSpore (the main venv)."""
    import shutil
    import subprocess

    exe = shutil.which("ascend")
    if exe is None:
        pytest.skip("the ascend command is not on PATH")
    (tmp_path / "ms").mkdir()
    proc = subprocess.run([exe, "convert", "--src", str(tmp_path / "ms"), "--from-format", "mindspore",
                           "--out", str(tmp_path / "out"), "--precision", "bf16"], capture_output=True, text=True, timeout=120)
    _assert_install_error(proc.returncode, proc.stderr)
    assert proc.stdout == "" and not (tmp_path / "out").exists()
