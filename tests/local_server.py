"""A local HTTP server on 127.0.0.1 for the download tests (datasets, named weights).

    server.files["/blob.bin"] = payload          # served at server.url + "blob.bin"
    server.truncate.add("/blob.bin")             # announce len(payload) bytes, send half
    server.hold["/blob.bin"] = (n, event)        # send the first n bytes, then wait for event.set()
    server.chunk_delay = 0.02                    # a slow server: sleep between 16 KiB chunks
    server.requests                              # the paths asked for, in order

``server.url`` ends with "/": it is a mirror prefix as the datasets take it (``mirror +
name``) and a base address as ``CNNKIT_WEIGHTS_URL`` takes it. The ``server`` fixture in
``tests/conftest.py`` starts one per test; ``close()`` stops it (the network is then "down").
No other address is ever contacted.
"""

from __future__ import annotations

import http.server
import threading
import time

__all__ = ["LocalServer"]


class LocalServer:
    """Serve ``files`` (path -> bytes); paths in ``truncate`` announce more bytes than they send."""

    CHUNK = 16 * 1024
    HOLD_TIMEOUT = 120.0  # seconds a held response waits for its event at most: a hang guard

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.hold: dict[str, tuple[int, threading.Event]] = {}
        self.chunk_delay = 0.0
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
                if self.path in server.truncate:
                    body = body[: len(body) // 2]
                held, event = server.hold.get(self.path, (0, None))
                try:
                    self.send_slowly(body[:held])
                    if event is not None:
                        event.wait(server.HOLD_TIMEOUT)
                    self.send_slowly(body[held:])
                except ConnectionError:  # the client is gone (a test killed it)
                    pass

            def send_slowly(self, data: bytes) -> None:
                for start in range(0, len(data), server.CHUNK):
                    self.wfile.write(data[start : start + server.CHUNK])
                    self.wfile.flush()
                    if server.chunk_delay:
                        time.sleep(server.chunk_delay)

            def log_message(self, *args):
                pass

        self.httpd: http.server.ThreadingHTTPServer | None = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        for _, event in self.hold.values():  # no response stays held: closing waits for them
            event.set()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
