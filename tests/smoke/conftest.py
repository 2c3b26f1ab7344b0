import sys
from pathlib import Path

import pytest

# Helper modules beside this file import under any pytest --import-mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_openai_server import FakeServer  # noqa: E402


@pytest.fixture(scope="module")
def fake_server():
    """One scripted server per module; each test sets ``fake_server.faults`` (cleared after)."""
    server = FakeServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(fake_server):
    fake_server.faults.clear()
    fake_server.api_key["key"] = None
    yield fake_server
    fake_server.faults.clear()
    fake_server.api_key["key"] = None
