"""A local stand-in for the Hugging Face Hub, driven by the real ``huggingface_hub`` client.

Endpoints (huggingface_hub 2.x): ``GET /api/models/{repo}/revision/{rev}`` (model info with
siblings, sizes and LFS sha256), ``GET /api/models/{repo}/tree/{rev}?recursive=...`` (the tree
snapshot_download lists), ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` (file metadata and bytes,
Range supported). Fault ``cut`` closes the connection half-way through a body.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

COMMIT = "1f2e3d4c5b6a79880716253443526170f8e9dabc"


class FakeHuggingFace:
    def __init__(self, files: dict[str, bytes], repo_id: str):
        self.repo_id = repo_id
        self.files = dict(files)
        self.faults: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()
        hub = self

        def entry(path: str, data: bytes, tree: bool) -> dict:
            sha = hashlib.sha256(data).hexdigest()
            blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            lfs = path.endswith(".safetensors")
            if tree:
                out = {"type": "file", "oid": blob, "size": len(data), "path": path}
                if lfs:
                    out["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
                return out
            out = {"rfilename": path, "size": len(data), "blobId": blob}
            if lfs:
                out["lfs"] = {"sha256": sha, "size": len(data), "pointerSize": 134}
            return out

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, head: bool = False):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _json(self, obj):
                self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json"})

            def _route(self, head: bool):
                url = urlparse(self.path)
                path = unquote(url.path)
                repo = re.escape(hub.repo_id)
                if m := re.fullmatch(rf"/api/models/{repo}/revision/([^/]+)", path):
                    return self._json({"_id": "x", "id": hub.repo_id, "modelId": hub.repo_id, "sha": COMMIT, "private": False,
                                       "siblings": [entry(p, d, False) for p, d in sorted(hub.files.items())]})
                if m := re.fullmatch(rf"/api/models/{repo}/tree/([^/]+)(/.*)?", path):
                    return self._json([entry(p, d, True) for p, d in sorted(hub.files.items())])
                if m := re.fullmatch(rf"/{repo}/resolve/([^/]+)/(.+)", path):
                    return self._file(m.group(2), head)
                return self._send(404, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound", "Content-Type": "application/json"}, head)

            def _file(self, rel: str, head: bool):
                data = hub.files.get(rel)
                rng = self.headers.get("Range")
                with hub.lock:
                    hub.requests.append(("HEAD" if head else "GET", rel, rng))
                    fault = None if head or not hub.faults.get(rel) else hub.faults[rel].pop(0)
                if data is None:
                    return self._send(404, b'{"error":"Entry not found"}', {"X-Error-Code": "EntryNotFound"}, head)
                sha = hashlib.sha256(data).hexdigest()
                headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{sha}"', "Accept-Ranges": "bytes",
                           "Content-Type": "application/octet-stream"}
                start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1)) if rng else 0
                body = data[start:]
                status = 206 if rng else 200
                if rng:
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                if fault == "cut":
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self._send(status, body, headers, head)

            def do_GET(self):  # noqa: N802
                self._route(head=False)

            def do_HEAD(self):  # noqa: N802
                self._route(head=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
