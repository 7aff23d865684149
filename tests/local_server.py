"""A local HTTP server on 127.0.0.1 for the download tests (datasets, named weights).

    server.files["/blob.bin"] = payload          # served at server.url + "blob.bin"
    server.truncate.add("/blob.bin")             # announce len(payload) bytes, send half
    server.requests                              # the paths asked for, in order

``server.url`` ends with "/": it is a mirror prefix as the datasets take it (``mirror +
name``) and a base address as ``CNNKIT_WEIGHTS_URL`` takes it. The ``server`` fixture in
``tests/conftest.py`` starts one per test; ``close()`` stops it (the network is then "down").
No other address is ever contacted.
"""

from __future__ import annotations

import http.server
import threading

__all__ = ["LocalServer"]


class LocalServer:
    """Serve ``files`` (path -> bytes); paths in ``truncate`` announce more bytes than they send."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in server.truncate else body)

            def log_message(self, *args):
                pass

        self.httpd: http.server.ThreadingHTTPServer | None = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
