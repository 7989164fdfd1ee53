"""HTTP for the downloader: one request at a time on the standard library's http.client, in a worker thread.

Why not httpx, which the rest of the agent uses: a model file is gigabytes, and the body's bytes are the whole
cost. httpx's asyncio stream spends about 3 CPU-seconds per GiB in Python around each 64 KiB read (its h11
parser, anyio's stream), so an agent that also hashes what it receives could not keep up with curl on a fast
link (bench/node_agent.py). http.client reads the body in C (`read1` over a buffered socket) with the GIL
released while it waits, at about a tenth of that; the hashing and writing happen in a second thread.

What this module gives the downloader is what it used from httpx: redirects (Authorization dropped when one
changes origin; every hop's headers kept, Hugging Face's sha256 is on its redirect), the proxies of the
environment (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`, as curl and httpx read them), TLS verified against
`SSL_CERT_FILE` or certifi's bundle, connect and read timeouts, and `abort()` from another thread, which
wakes a read that is blocked on a stalled connection.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import socket
import ssl
import threading
import urllib.request
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

import aiwm_node

REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
USER_AGENT = f"aiwm-node/{aiwm_node.__version__}"


class FetchError(Exception):
    """The request did not get an answer: unreachable, refused, timed out, TLS, aborted."""


class TooManyRedirects(FetchError):
    pass


@dataclass
class Hop:
    """A redirect on the way: its status and headers (Hugging Face puts the file's sha256 on its redirect)."""

    status_code: int
    headers: Message


@dataclass
class Response:
    """An answer whose body has not been read yet; `read1` and `close` are for the thread that reads it,
    `abort` for any other."""

    url: str
    status_code: int
    headers: Message
    history: list[Hop] = field(default_factory=list)
    _raw: http.client.HTTPResponse | None = None
    _conn: http.client.HTTPConnection | None = None

    def read1(self, size: int) -> bytes:
        """Up to `size` bytes of the body, as soon as some are there; b"" at its end (or when the connection
        ended before it: the caller compares what it got with Content-Length)."""
        assert self._raw is not None
        try:
            return self._raw.read1(size)
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    @property
    def encoding(self) -> str:
        return (self.headers.get("Content-Encoding") or "identity").strip().lower()

    def abort(self) -> None:
        """Ends the connection under a read blocked in another thread (close alone would not wake it)."""
        _shutdown(self._conn)


class Call:
    """One request, possibly redirected: `open()` in a worker thread, `abort()` from anywhere, before or
    during it, or while its body is read."""

    def __init__(self, url: str, headers: dict[str, str], *, method: str, connect_timeout: float, read_timeout: float):
        self.url, self.headers, self.method = url, headers, method
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self.aborted = False

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            _shutdown(self._conn)

    def open(self) -> Response:
        url, headers = self.url, dict(self.headers)
        history: list[Hop] = []
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            conn, target, extra = self._connection(parts)
            try:
                conn.connect()
                if conn.sock is not None:
                    conn.sock.settimeout(self.read_timeout)
                if self.aborted:
                    raise FetchError("aborted")
                conn.request(self.method, target, headers={"User-Agent": USER_AGENT, **headers, **extra})
                raw = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise FetchError("aborted" if self.aborted else f"{type(exc).__name__}: {exc}") from exc
            except BaseException:
                conn.close()
                raise
            location = raw.getheader("Location")
            if raw.status not in REDIRECTS or not location:
                if self.method == "HEAD":
                    conn.close()
                    return Response(url, raw.status, raw.msg, history)
                return Response(url, raw.status, raw.msg, history, raw, conn)
            history.append(Hop(raw.status, raw.msg))
            conn.close()
            following = urljoin(url, location)
            if _origin(urlsplit(following)) != _origin(parts):
                # The credentials are for the server that asked; a CDN's signed URL carries its own.
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            url = following
        raise TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")

    def _connection(self, parts: SplitResult) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
        """A connection to the server or its proxy, the request target to send on it and the proxy's headers."""
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"cannot fetch {parts.geturl()!r}")
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        proxy, extra = _proxy_for(parts), {}
        conn: http.client.HTTPConnection
        if proxy is None:
            conn = _new_connection(parts.scheme, host, port, self.connect_timeout)
        elif parts.scheme == "https":
            conn = _new_connection("https", proxy.hostname or "", proxy.port or 80, self.connect_timeout, tls=True)
            conn.set_tunnel(host, port, headers=_proxy_headers(proxy))
        else:
            conn = _new_connection("http", proxy.hostname or "", proxy.port or 80, self.connect_timeout)
            extra = _proxy_headers(proxy)
            path = parts._replace(fragment="").geturl()  # a plain-HTTP proxy takes the absolute URL
        with self._lock:
            if self.aborted:
                raise FetchError("aborted")
            self._conn = conn
        return conn, path, extra


def _new_connection(
    scheme: str, host: str, port: int, timeout: float, *, tls: bool | None = None
) -> http.client.HTTPConnection:
    if tls if tls is not None else scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=tls_context())
    return http.client.HTTPConnection(host, port, timeout=timeout)


def _shutdown(conn: http.client.HTTPConnection | None) -> None:
    sock = conn.sock if conn is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):  # not connected yet, or already gone
            sock.shutdown(socket.SHUT_RDWR)


def _origin(parts: SplitResult) -> tuple[str, str, int | None]:
    return parts.scheme, (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


def _proxy_for(parts: SplitResult) -> SplitResult | None:
    """The proxy the environment names for this URL (urllib's reading of *_PROXY and NO_PROXY), or None."""
    proxy = urllib.request.getproxies_environment().get(parts.scheme)
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if not proxy or bypass(parts.hostname or ""):
        return None
    return urlsplit(proxy if "://" in proxy else f"http://{proxy}")


def _proxy_headers(proxy: SplitResult) -> dict[str, str]:
    if proxy.username is None:
        return {}
    user_pass = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()
    return {"Proxy-Authorization": "Basic " + base64.b64encode(user_pass).decode()}


_TLS: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """Verifying, against SSL_CERT_FILE when it is set, else certifi's bundle (as httpx), else the system's."""
    global _TLS
    if _TLS is None:
        cafile = os.environ.get("SSL_CERT_FILE")
        if not cafile:
            try:
                import certifi

                cafile = certifi.where()
            except ImportError:
                cafile = None
        _TLS = ssl.create_default_context(cafile=cafile)
    return _TLS
