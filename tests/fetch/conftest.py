"""Fixtures: a tiny checkpoint served by the local ModelScope stand-in (fake_modelscope.py)."""

from __future__ import annotations

import pytest
from fake_modelscope import FakeModelScope, make_checkpoint


@pytest.fixture
def modelscope_env(tmp_path, monkeypatch):
    """Keep the modelscope client's cache, locks and credentials inside the test's tmp dir,
    and make its retries immediate (the delays are module constants read at import)."""
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "ms-home"))
    monkeypatch.delenv("MODELSCOPE_API_TOKEN", raising=False)
    monkeypatch.delenv("MODELSCOPE_ENDPOINT", raising=False)
    monkeypatch.setenv("MODELSCOPE_DOWNLOAD_INTRA_CLOUD", "false")
    import modelscope_hub._download as ms_download

    monkeypatch.setattr(ms_download, "DOWNLOAD_RETRY_MAX_DELAY_SECONDS", 0)
    monkeypatch.setattr(ms_download, "DOWNLOAD_INTEGRITY_RETRY_BACKOFF", 0)
    monkeypatch.setattr(ms_download, "DOWNLOAD_RETRY_TIMES", 2)


@pytest.fixture
def checkpoint_files(tmp_path_factory) -> dict[str, bytes]:
    return make_checkpoint(tmp_path_factory.mktemp("src"))


@pytest.fixture
def hub(checkpoint_files, modelscope_env):
    server = FakeModelScope(checkpoint_files)
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
        server.thread.join(timeout=5)
