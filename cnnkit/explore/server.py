"""The web server: Starlette routes over ``api``, and ``serve`` with uvicorn.

Security, by construction:
- bound to 127.0.0.1 unless a host is given (the command warns then), and requests must
  name an allowed host (a DNS-rebinding page cannot talk to it);
- the page and its assets come from a fixed table read from the package at start; no
  part of a request is ever used as a file path;
- uploads: size cap (checked on the header and while reading), image types only,
  pixel-count cap (``images.LIMITS``); a POST from another origin is refused;
- nothing is unpickled (``.npy`` files are written with ``allow_pickle=False``);
- a malformed request gets a 4xx JSON ``{"error": message}``; an unexpected failure gets
  a 500 JSON message without a traceback (the traceback goes to the server's log).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from importlib import resources
from typing import Any

from ..errors import ExploreError
from . import api
from .images import LIMITS, decode_upload, log_file, picture_png
from .session import Explorer

__all__ = ["create_app", "serve", "bind", "url_of", "is_loopback", "ASSETS", "DEFAULT_PORT", "LOOPBACK"]

DEFAULT_PORT = 8765
LOOPBACK = "127.0.0.1"
ASSETS = ("index.html", "style.css", "util.js", "network.js", "flow.js", "neuron.js", "decision.js",
          "learned.js", "training.js", "app.js")
SCRIPTS = ASSETS[2:]
_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8"}
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")
log = logging.getLogger("cnnkit.explore")


def read_assets() -> dict[str, bytes]:
    """The page's files, read once from the installed package."""
    folder = resources.files("cnnkit.explore") / "static"
    return {name: (folder / name).read_bytes() for name in ASSETS}


def _int(value: str | None, name: str, default: int | None = None) -> int | None:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ExploreError(f"{name} must be an integer, got {value!r}") from None


def _int_list(value: str | None, name: str) -> list[int] | None:
    if value is None or value == "":
        return None
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise ExploreError(f"{name} must be comma-separated integers, got {value!r}") from None


def create_app(explorer: Explorer, *, allowed_hosts: list[str] | None = None):
    """Build the Starlette application for one explorer.

    Args:
        allowed_hosts: Host header values accepted (port excluded); default: loopback names.
            ["*"] accepts any (only when serving on every interface).
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    assets = read_assets()
    hosts = allowed_hosts or ["127.0.0.1", "localhost", "::1", "[::1]"]

    def headers(kind: str = "api") -> dict[str, str]:
        h = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
        if kind == "page":
            h.update({"Content-Security-Policy": _CSP, "X-Frame-Options": "DENY"})
        return h

    def as_json(payload: Any, status: int = 200) -> Response:
        return JSONResponse(api.finite(payload), status_code=status, headers=headers())

    async def locked(fn, *args, **kwargs):
        def call():
            with explorer.lock:
                return fn(*args, **kwargs)
        return await run_in_threadpool(call)

    def run_of(request: Request):
        return explorer.get_run(request.path_params["run"])

    # ------------------------------------------------------------------ the page
    async def page(request: Request) -> Response:
        return Response(assets["index.html"], media_type=_TYPES[".html"], headers=headers("page"))

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in assets or name == "index.html":
            raise ExploreError(f"no asset named {name!r}", 404)
        suffix = name[name.rfind("."):]
        return Response(assets[name], media_type=_TYPES[suffix], headers=headers("page"))

    # ------------------------------------------------------------------ the model
    async def model(request: Request) -> Response:
        return as_json(await locked(api.model_info, explorer))

    async def sample_png(request: Request) -> Response:
        index = request.path_params["index"]
        if not 0 <= index < len(explorer.samples):
            raise ExploreError(f"no sample {index}: there are {len(explorer.samples)}", 404)
        picture = await locked(explorer.samples[index].load)
        scale = max(1, 64 // max(picture.shape[1:]))
        return Response(picture_png(picture, scale), media_type="image/png", headers=headers())

    async def run_sample(request: Request) -> Response:
        _same_origin(request)
        index = request.path_params["index"]
        if not 0 <= index < len(explorer.samples):
            raise ExploreError(f"no sample {index}: there are {len(explorer.samples)}", 404)
        sample = explorer.samples[index]

        def work():
            try:
                picture = sample.load()
            except (OSError, ValueError) as e:
                raise ExploreError(f"sample {sample.name} cannot be read: {e}", 422) from None
            return api.run_info(explorer.run(picture, sample.name))
        return as_json(await locked(work))

    async def upload(request: Request) -> Response:
        _same_origin(request)
        length = _int(request.headers.get("content-length"), "Content-Length")
        if length is not None and length > LIMITS["max_bytes"]:
            raise ExploreError(f"the upload has {length:,} bytes; the limit is {LIMITS['max_bytes']:,}", 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > LIMITS["max_bytes"]:
                raise ExploreError(f"the upload exceeds the limit of {LIMITS['max_bytes']:,} bytes", 413)
            chunks.append(chunk)
        body = b"".join(chunks)
        invert = request.query_params.get("invert", "auto")
        if invert not in ("auto", "never", "always"):
            raise ExploreError(f"invert must be auto, never or always, got {invert!r}")
        name = request.query_params.get("name", "upload")[:200]

        def work():
            picture = decode_upload(body, request.headers.get("content-type"), explorer.target,
                                    fully_convolutional=explorer.fully_convolutional, invert=invert, name=name)
            return api.run_info(explorer.run(picture, name))
        return as_json(await locked(work))

    # ------------------------------------------------------------------ one image
    async def maps(request: Request) -> Response:
        q = request.query_params
        k = _int(q.get("k"), "k", 8)
        channels = _int_list(q.get("channels"), "channels")
        order = q.get("order", "mean")
        return as_json(await locked(lambda: api.maps(run_of(request), request.path_params["unit"], k, order, channels)))

    async def neuron(request: Request) -> Response:
        index = _int_list(request.query_params.get("index"), "index")
        if index is None:
            raise ExploreError("index is required: c,y,x for an image-shaped output, d for a vector")
        return as_json(await locked(lambda: api.neuron(run_of(request), request.path_params["unit"], index)))

    async def decision(request: Request) -> Response:
        q = request.query_params
        target, cam = _int(q.get("target"), "target"), _int(q.get("cam"), "cam")
        return as_json(await locked(lambda: api.decision(run_of(request), target, cam)))

    async def statistics(request: Request) -> Response:
        return as_json(await locked(lambda: api.statistics(run_of(request))))

    async def filters(request: Request) -> Response:
        q = request.query_params
        nf, nc = _int(q.get("filters"), "filters", 64), _int(q.get("channels"), "channels", 16)
        return as_json(await locked(api.filters, explorer, request.path_params["unit"], nf, nc))

    # ------------------------------------------------------------------ files
    def npy(array, filename: str) -> Response:
        h = headers()
        h["Content-Disposition"] = f'attachment; filename="{filename}"'
        return Response(api.npy_bytes(array), media_type="application/octet-stream", headers=h)

    async def tensor_npy(request: Request) -> Response:
        unit = request.path_params["unit"]
        what = request.query_params.get("what", "output")
        target = _int(request.query_params.get("target"), "target")

        def work():
            run = run_of(request)
            a = run.unit_output(unit)
            if what == "output":
                return a
            if what == "gradient":
                t = target if target is not None else int(run.probabilities.reshape(run.probabilities.shape[0], -1).max(axis=1).argmax())
                grads = run.class_gradients(t)["units"]
                if unit not in grads:
                    raise ExploreError(f"layer {unit}: the class score does not depend on it", 404)
                return grads[unit]
            raise ExploreError(f"what must be 'output' or 'gradient', got {what!r}")
        return npy(await locked(work), f"image{request.path_params['run']}_layer{unit}_{what}.npy")

    async def input_npy(request: Request) -> Response:
        run = await locked(run_of, request)
        return npy(run.x[0], f"image{run.id}_input.npy")

    async def parameter_npy(request: Request) -> Response:
        name = request.path_params["name"]
        return npy(await locked(explorer.parameter, name), f"{name}.npy")

    # ------------------------------------------------------------------ training
    async def training(request: Request) -> Response:
        return as_json(await run_in_threadpool(api.training, explorer))

    async def training_events(request: Request) -> Response:
        folder = explorer.target.run_folder
        if folder is None:
            raise ExploreError("the checkpoint's run folder is not known, so there is no training log", 404)
        interval = 1.0

        async def events():
            last = None
            quiet = 0.0
            while not await request.is_disconnected():
                found = log_file(folder)
                stamp = None
                if found is not None:
                    st = found.stat()
                    # the page's own checkpoint being saved over is news too (the page says so)
                    stamp = (found.name, st.st_mtime_ns, st.st_size, explorer.file_changed())
                if stamp != last and found is not None:
                    last = stamp
                    try:
                        payload = await run_in_threadpool(api.training, explorer)
                    except ExploreError:
                        payload = None
                    if payload is not None:
                        yield f"event: log\ndata: {json.dumps(payload)}\n\n"
                        quiet = 0.0
                if quiet >= 15.0:
                    yield ": keep-alive\n\n"
                    quiet = 0.0
                await asyncio.sleep(interval)
                quiet += interval

        h = headers()
        h["X-Accel-Buffering"] = "no"
        return StreamingResponse(events(), media_type="text/event-stream", headers=h)

    # ------------------------------------------------------------------ errors
    async def explore_error(request: Request, exc: ExploreError) -> Response:
        return as_json({"error": str(exc)}, exc.status)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = exc.detail if exc.status_code != 404 else f"no such page or API route: {request.url.path}"
        return as_json({"error": message}, exc.status_code)

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("explore: %s %s failed", request.method, request.url.path, exc_info=exc)
        return as_json({"error": f"internal error ({type(exc).__name__}); the server's log has the details"}, 500)

    routes = [
        Route("/", page),
        Route("/static/{name:str}", asset),
        Route("/api/model", model),
        Route("/api/samples/{index:int}.png", sample_png),
        Route("/api/samples/{index:int}/run", run_sample, methods=["POST"]),
        Route("/api/images", upload, methods=["POST"]),
        Route("/api/images/{run:int}/maps/{unit:int}", maps),
        Route("/api/images/{run:int}/neuron/{unit:int}", neuron),
        Route("/api/images/{run:int}/decision", decision),
        Route("/api/images/{run:int}/statistics", statistics),
        Route("/api/images/{run:int}/input.npy", input_npy),
        Route("/api/images/{run:int}/layers/{unit:int}.npy", tensor_npy),
        Route("/api/filters/{unit:int}", filters),
        Route("/api/parameters/{name:str}.npy", parameter_npy),
        Route("/api/training", training),
        Route("/api/training/events", training_events),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)],
        exception_handlers={ExploreError: explore_error, HTTPException: http_error, Exception: internal_error},
    )


def _same_origin(request) -> None:
    """Refuse a state-changing request sent by a page of another origin."""
    origin = request.headers.get("origin")
    if origin is None:
        return  # not sent by a browser page (curl, scripts): nothing to check
    host = request.headers.get("host", "")
    if origin.split("://", 1)[-1] != host:  # includes "null" (sandboxed frames, file: pages)
        raise ExploreError(f"cross-origin request refused (origin {origin}, host {host})", 403)


# --------------------------------------------------------------------------- serving
def bind(host: str, port: int | None) -> socket.socket:
    """Open the listening socket: ``port`` exactly, or DEFAULT_PORT and else any free port.

    Raises:
        OSError: the given port is taken or the host cannot be bound (the message says which).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    candidates = [port] if port is not None else [DEFAULT_PORT, 0]
    last_error: OSError | None = None
    for p in candidates:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, p))
        except OSError as e:
            sock.close()
            last_error = e
            continue
        sock.listen(128)
        sock.set_inheritable(True)
        return sock
    where = f"{host}:{port}" if port is not None else host
    raise OSError(f"cannot listen on {where}: {last_error.strerror if last_error else 'unknown error'}")


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"
    return f"http://{shown}:{port}/"


def is_loopback(host: str) -> bool:
    """True for the addresses only this machine can reach."""
    return host in (LOOPBACK, "localhost", "::1") or host.startswith("127.")


def serve(explorer: Explorer, host: str = LOOPBACK, port: int | None = None, *, open_browser: bool = True,
          on_ready=None) -> None:
    """Serve the page until interrupted (Ctrl+C).

    Args:
        host: the address to bind (loopback by default; anything else lets other machines in).
        port: the port; None tries DEFAULT_PORT, then any free port.
        open_browser: open the page in the default browser once the server listens.
        on_ready: called with the page's URL once the socket listens (the CLI prints it).

    Raises:
        OSError: the port is taken or the host cannot be bound.
    """
    import threading
    import webbrowser

    import uvicorn  # the explore extra: loaded only when a server starts

    sock = bind(host, port)
    url = url_of(sock)
    allowed = None if is_loopback(host) else (["*"] if host in ("0.0.0.0", "::") else [host, "127.0.0.1", "localhost"])
    app = create_app(explorer, allowed_hosts=allowed)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1))
    if on_ready is not None:
        on_ready(url)
    if open_browser:
        threading.Timer(0.5, lambda: webbrowser.open(url)).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
