"""A local stand-in for ModelScope's dataset repos, driven by the real ``modelscope`` client
(``dataset_snapshot_download``, modelscope 1.40 / modelscope-hub 0.5.1). It serves:

  GET /api/v1/datasets/{owner}/{name}/repo/tree?Revision=R&Recursive=True&PageNumber=N&PageSize=S
      -> {"Code": 200, "Data": {"Files": [{"Path", "Name", "Type": "blob", "Size", "Sha256"}]}}
  GET /api/v1/datasets/{owner}/{name}/repo?Revision=R&FilePath=P   -> the file's bytes

Anything else is a 404 in ModelScope's JSON error shape. ``requests`` records the paths asked for.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class FakeDatasetHub:
    def __init__(self, dataset_id: str, files: dict[str, bytes]):
        self.dataset_id, self.files = dataset_id, dict(files)
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, data: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _not_found(self) -> None:
                self._send(404, json.dumps({"Code": 10010205001, "Message": "not found", "Success": False}).encode())

            def do_GET(self):  # noqa: N802
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                hub.requests.append(url.path + ("?FilePath=" + query["FilePath"] if "FilePath" in query else ""))
                m = re.fullmatch(r"/api/v1/datasets/([^/]+/[^/]+)/repo(/tree)?", url.path)
                if not m or m.group(1) != hub.dataset_id:
                    return self._not_found()
                if m.group(2):
                    page = int(query.get("PageNumber", 1))
                    entries = [] if page > 1 else [
                        {"Name": p.rsplit("/", 1)[-1], "Path": p, "Type": "blob", "Size": len(d),
                         "Sha256": hashlib.sha256(d).hexdigest(), "Revision": "0" * 40}
                        for p, d in sorted(hub.files.items())]
                    return self._send(200, json.dumps({"Code": 200, "Data": {"Files": entries}, "Success": True}).encode())
                data = hub.files.get(query.get("FilePath", ""))
                if data is None:
                    return self._not_found()
                self._send(200, data, "application/octet-stream")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeDatasetHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
