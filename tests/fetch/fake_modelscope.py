"""A local stand-in for the ModelScope hub, driven by the real ``modelscope`` client.

The server speaks the endpoints modelscope 1.40 / modelscope-hub 0.5.1 call (see
``ascend/fetch/hubs.py``): the recursive file listing with ``Size`` and ``Sha256``, the file
download with HTTP Range resume, and repo info. Faults are injected per file: ``cut`` closes the
connection after half the body (an interrupted transfer), ``hold`` waits for ``release`` (a download
in progress), ``corrupt`` serves the right number of wrong bytes (sha256 mismatch).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
from safetensors.numpy import save_file

MODEL_ID = "tiny-org/tiny-moe"


def make_checkpoint(root: Path, shards: int = 3) -> dict[str, bytes]:
    """A tiny HF-layout checkpoint: config.json, ``shards`` safetensors files and their index."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        tensors = {
            f"model.layers.{i}.mlp.gate_proj.weight": rng.standard_normal((64, 32)).astype(np.float32),
            f"model.layers.{i}.mlp.up_proj.weight": rng.standard_normal((64, 32)).astype(np.float32),
            f"model.layers.{i}.input_layernorm.weight": rng.standard_normal((32,)).astype(np.float32),
        }
        save_file(tensors, str(root / name))
        weight_map.update({t: name for t in tensors})
    (root / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}, indent=1)
    )
    (root / "config.json").write_text(json.dumps({"model_type": "tiny", "hidden_size": 32}))
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class FakeModelScope:
    def __init__(self, files: dict[str, bytes], model_id: str = MODEL_ID):
        self.model_id = model_id
        self.files = dict(files)
        self.faults: dict[str, list[str]] = {}  # path -> faults consumed one per download request
        self.requests: list[tuple[str, str, str | None]] = []  # (kind, path, Range header)
        self.lock = threading.Lock()
        self.release = threading.Event()  # fault "hold": the response waits for this
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 - http.server API
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                m = re.fullmatch(r"/api/v1/models/([^/]+/[^/]+)(/repo/files|/repo)?", url.path)
                if not m or m.group(1) != hub.model_id:
                    return self._json(404, {"Code": 10010205001, "Message": "not found", "Success": False})
                if m.group(2) == "/repo/files":
                    return self._listing(query)
                if m.group(2) == "/repo":
                    return self._download(query.get("FilePath", ""))
                return self._json(200, {"Code": 200, "Data": {"Path": hub.model_id.split("/")[0], "Name": hub.model_id.split("/")[1]}, "Success": True})

            def _listing(self, query):
                root = (query.get("Root") or "").strip("/")
                with hub.lock:
                    hub.requests.append(("list", root, None))
                entries = []
                for path, data in sorted(hub.files.items()):
                    if root and not path.startswith(root + "/"):
                        continue
                    entries.append({
                        "Name": path.rsplit("/", 1)[-1], "Path": path, "Type": "blob",
                        "Size": len(data), "Sha256": hashlib.sha256(data).hexdigest(),
                        "Revision": "0123456789abcdef0123456789abcdef01234567",
                    })
                return self._json(200, {"Code": 200, "Data": {"Files": entries}, "Success": True})

            def _download(self, path):
                data = hub.files.get(path)
                rng = self.headers.get("Range")
                with hub.lock:
                    hub.requests.append(("get", path, rng))
                    fault = hub.faults[path].pop(0) if hub.faults.get(path) else None
                if data is None:
                    return self._json(404, {"Code": 10010205001, "Message": "file not found", "Success": False})
                start = 0
                if rng:
                    start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                body = data[start:]
                if fault == "hold":  # a download in progress until the test releases it
                    hub.release.wait(timeout=60)
                if fault == "corrupt":
                    body = bytes(b ^ 0xFF for b in body)
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if fault == "cut":  # an interrupted transfer: half the body, then the socket closes
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def downloads(self, path: str) -> list[str | None]:
        """Range headers of the download requests seen for ``path`` (None = from byte 0)."""
        return [r for kind, p, r in self.requests if kind == "get" and p == path]
