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
    from ascend.checkpoint.mindspore_io import require_mindspore

    with pytest.raises(BackendUnavailable) as info:
        require_mindspore()
    _assert_install_line(info.value)
    assert info.value.line().startswith("MindSpore checkpoints need the 'mindspore' package, which is not installed")


def test_read_and_write_fail_before_touching_files(no_mindspore, tmp_path):
    import torch

    from ascend.checkpoint.mindspore_io import convert_hf_to_mindspore, read_mindspore, write_mindspore

    with pytest.raises(BackendUnavailable) as info:
        read_mindspore(tmp_path / "missing.safetensors")
    _assert_install_line(info.value)
    with pytest.raises(BackendUnavailable) as info:
        write_mindspore(tmp_path / "x.safetensors", {"w": torch.zeros(2)})
    _assert_install_line(info.value)
    with pytest.raises(BackendUnavailable):
        convert_hf_to_mindspore(tmp_path, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []

