"""The dashboard's web server: Starlette routes over :class:`DashboardData`, run by uvicorn.

Safety, as Jupyter does it: the server binds 127.0.0.1 unless told otherwise; every
request needs the random token, given once in the URL (``?token=...``) and then kept in a
cookie; a request whose ``Host`` header is not this machine's is refused (no DNS
rebinding); every route only reads.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import os
import secrets
import socket
import threading
import time
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
except ImportError as error:  # pragma: no cover - depends on the install
    raise ModuleNotFoundError(
        "the dashboard needs Starlette and uvicorn: pip install 'rigorous-recorder[ui]'", name=error.name
    ) from None

from ._data import DashboardData, DashboardError

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from ..collection import ExperimentCollection

STATIC = Path(__file__).with_name("static")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # every address: the URL then names this machine
_LOOPBACK_OF = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # where a server bound to every address is reached here
_STARTUP_TIMEOUT = 30.0
_SHUTDOWN_GRACE = 5.0  # seconds a stopping server gives the requests in flight (a query over 1,000 runs takes seconds)


class _Guard:
    """ASGI middleware: refuse foreign ``Host`` headers and requests without the token."""

    def __init__(self, app: ASGIApp, token: str, hosts: set[str], cookie: str) -> None:
        self.app = app
        self.token = token
        self.hosts = hosts
        self.cookie = cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        host = _host_name(request.headers.get("host", ""))
        if host not in self.hosts and not _is_address(host):
            await PlainTextResponse(f"host {host!r} is not served here", status_code=403)(scope, receive, send)
            return
        given = request.query_params.get("token", "")
        by_url = bool(given) and secrets.compare_digest(given, self.token)
        if not by_url and not secrets.compare_digest(request.cookies.get(self.cookie, ""), self.token):
            await PlainTextResponse("open the URL with its token (printed when the dashboard started)",
                                    status_code=403)(scope, receive, send)
            return
        if not by_url:
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                cookie = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _curve_options(query: Any) -> dict[str, Any]:
    """The curve request's options besides runs, y and x; ValueError on a malformed number."""
    low, high = query.get("lo", ""), query.get("hi", "")
    return {"buckets": int(query.get("buckets", "800")), "smoothing": float(query.get("smooth", "0") or 0),
            "x_range": (float(low), float(high)) if low and high else None,
            "relative": query.get("relative") == "1", "group_by": query.get("by", ""),
            "time_axis": query.get("time", "")}


def _host_name(header: str) -> str:
    """The host of a ``Host`` header, without its port (``[::1]:8000`` gives ``::1``)."""
    if header.startswith("["):
        return header[1: header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _is_address(host: str) -> bool:
    """An IP address cannot be rebound by DNS: any is fine (as Jupyter allows)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def create_app(data: DashboardData, token: str, hosts: set[str], cookie: str = "rigorous_recorder_token") -> ASGIApp:
    """The dashboard as an ASGI app: the page, its static files and the JSON API, behind the guard."""

    async def answer(work: Any, *args: Any, **kwargs: Any) -> Response:
        try:
            result = await run_in_threadpool(work, *args, **kwargs)
        except DashboardError as error:  # the user's SQL or choice was wrong: the message is the answer
            return JSONResponse({"error": str(error)})
        return Response(json.dumps(result, allow_nan=False, separators=(",", ":")), media_type="application/json")

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def runs(request: Request) -> Response:
        query = request.query_params
        try:
            since = int(query.get("since", "0") or 0)
        except ValueError as error:
            return JSONResponse({"error": f"bad runs request: {error}"}, status_code=400)
        return await answer(data.runs_since, where=query.get("where", ""), since=since)

    async def stats(request: Request) -> Response:
        query = request.query_params
        return await answer(data.stats, metric=query.get("metric", ""), x=query.get("x", ""))

    async def columns(request: Request) -> Response:
        return await answer(data.columns)

    async def curves(request: Request) -> Response:
        query = request.query_params
        try:
            options = _curve_options(query)
        except ValueError as error:
            return JSONResponse({"error": f"bad curve request: {error}"}, status_code=400)
        run_ids = [run_id for run_id in query.get("runs", "").split(",") if run_id]
        return await answer(data.curves, run_ids, y=query.get("y", ""), x=query.get("x", ""), **options)

    async def start(request: Request) -> Response:
        query = request.query_params  # the page's state, as its URL's hash holds it
        try:
            zoom = [float(value) for value in query.get("zoom", "").split(",") if value]
            options = {"buckets": int(query.get("buckets", "800")), "smoothing": float(query.get("smooth", "0") or 0),
                       "x_range": tuple(zoom) if len(zoom) == 2 else None, "relative": query.get("rel") == "1",
                       "group_by": query.get("by", ""), "time_axis": query.get("time", "")}
        except ValueError as error:
            return JSONResponse({"error": f"bad start request: {error}"}, status_code=400)
        selection = [run_id for run_id in query["sel"].split(",") if run_id] if "sel" in query else None
        return await answer(data.start, where=query.get("where", ""), selection=selection, y=query.get("y", ""),
                            x=query.get("x"), **options)

    async def sql(request: Request) -> Response:
        try:
            text = (await request.json())["sql"]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'send JSON {"sql": "SELECT ..."}'}, status_code=400)
        return await answer(data.query, str(text))

    app = Starlette(routes=[
        Route("/", page),
        Route("/api/start", start),
        Route("/api/runs", runs),
        Route("/api/stats", stats),
        Route("/api/columns", columns),
        Route("/api/curves", curves),
        Route("/api/sql", sql, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ])
    return _Guard(app, token, hosts, cookie)


class Dashboard:
    """A dashboard served from a background thread: open :attr:`url`; :meth:`stop` ends it."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, url: str, data: DashboardData,
                 preparing: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._data = data
        self._preparing = preparing
        #: The page's address, token included.
        self.url = url

    def stop(self) -> None:
        """Stop serving; returns once the server thread and every query it started have ended."""
        self._server.should_exit = True
        self._thread.join()
        self._preparing.join()
        self._data.wait_idle()

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C stops it)."""
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            self.stop()

    def _repr_html_(self) -> str:
        return f'<a href="{self.url}" target="_blank">rigorous-recorder dashboard</a>'

    def __repr__(self) -> str:
        return f"Dashboard({self.url!r})"


def serve(collection_or_path: ExperimentCollection | str | os.PathLike[str], host: str = "127.0.0.1",
          port: int = 0, open_browser: bool = False) -> Dashboard:
    """Serve the dashboard of a collection from a background thread; returns at once.

    Args:
        collection_or_path: an ExperimentCollection or its path; the dashboard opens its own
            read-only copy, so the collection you record into is not touched.
        host: the address to bind; 127.0.0.1 keeps it on this machine.
        port: the port; 0 picks a free one.
        open_browser: open the page in the default browser.

    >>> dashboard = serve("data/my_study")  # doctest: +SKIP
    >>> dashboard.url, dashboard.stop()  # doctest: +SKIP
    """
    path = getattr(collection_or_path, "path", collection_or_path)
    data = DashboardData(path)
    token = secrets.token_urlsafe(24)
    hosts = _served_hosts(host)
    cookie = "rigorous_recorder_" + hashlib.sha256(token.encode()).hexdigest()[:12]  # one per server
    config = uvicorn.Config(create_app(data, token, hosts, cookie=cookie),
                            host=host, port=port, log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=_SHUTDOWN_GRACE)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="rigorous-recorder-ui", daemon=True)
    thread.start()
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise OSError(f"the dashboard could not listen on {host}:{port} (see the message above)")
        time.sleep(0.02)
    address, bound = server.servers[0].sockets[0].getsockname()[:2]
    _warm_up(address, bound, token)
    # The first page's curves are read while the user opens it (its request waits for this read).
    preparing = threading.Thread(target=data.prepare, name="rigorous-recorder-ui-prepare", daemon=True)
    preparing.start()
    shown = host if host not in _WILDCARD_HOSTS else socket.gethostname()
    shown = f"[{shown}]" if ":" in shown else shown
    dashboard = Dashboard(server, thread, f"http://{shown}:{bound}/?token={token}", data, preparing)
    if open_browser:
        webbrowser.open(dashboard.url)
    return dashboard


def _warm_up(address: str, port: int, token: str) -> None:
    """Ask the new server for a file and an API answer before its URL is given out: the first
    request a server answers starts its thread pool and imports what files and answers need
    (~0.2 s of CPU), which the user's first page would otherwise wait for."""
    address = _LOOPBACK_OF.get(address, address)
    connection = http.client.HTTPConnection(address, port, timeout=_STARTUP_TIMEOUT)
    try:
        for path in ("/", "/api/columns"):
            connection.request("GET", f"{path}?token={token}", headers={"Host": LOOPBACK_HOSTS[0]})
            connection.getresponse().read()
    finally:
        connection.close()


def _served_hosts(host: str) -> set[str]:
    """The ``Host`` names this server answers: loopback, and this machine's names when bound wider."""
    hosts = set(LOOPBACK_HOSTS)
    if host not in LOOPBACK_HOSTS:
        hosts.update({socket.gethostname(), socket.getfqdn()})
        if host not in _WILDCARD_HOSTS:
            hosts.add(host)
    return hosts
