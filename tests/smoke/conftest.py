import pytest

from fake_openai_server import FakeServer


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
