"""A local HTTP file server for download tests: byte ranges, If-Range, validators, throttling and counters.

In-process: `with RangeServer(root) as server: ...` (a thread). As a process:
`python -m tests.support.range_server ROOT [--port N] [--throttle BYTES_PER_SECOND]` prints `{"url": ...}`
on one line, then serves until it is killed.
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased


class RangeServer:
    """Serves the files under `root`. The knobs are plain attributes a test may change at any time."""

    def __init__(
        self,
        root: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        throttle: float | None = None,
        ignore_ranges: bool = False,
        piece: int = 16 << 10,
    ) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        # Bytes per second per response body (None: as fast as the socket takes them), sent in `piece`s.
        self.throttle = throttle
        self.piece = piece
        # True: every GET answers 200 with the whole file, as a server without range support does.
        self.ignore_ranges = ignore_ranges
        # True: a range is answered 206 from byte 0 whatever it asked (a broken server or proxy).
        self.ranges_from_zero = False
        # False: no ETag header (only Last-Modified is left to validate a partial download).
        self.send_etag = True
        # URL path -> X-Linked-Etag value (Hugging Face sends the sha256 of LFS files there, quoted).
        self.linked_etags: dict[str, str] = {}
        # URL path -> absolute Location of a 302 (Hugging Face redirects LFS files to its CDN).
        self.redirects: dict[str, str] = {}
        # URL path -> a status to answer instead of the file (401, 403, 500...).
        self.statuses: dict[str, int] = {}
        # URL path -> body bytes the next GET sends before it drops the connection (once: the entry is removed).
        self.cut_after: dict[str, int] = {}
        # When set, response bodies wait for it before their first byte (to hold downloads in flight).
        self.gate: threading.Event | None = None
        self.requests: list[RecordedRequest] = []
        self.sent: dict[str, int] = {}  # URL path -> body bytes written to sockets
        self.active = 0  # response bodies being sent now
        self.max_active = 0
        self._lock = threading.Lock()
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.files = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> RangeServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="range-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.gate is not None:
            self.gate.set()  # let held responses finish instead of hanging their threads
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> RangeServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def put(self, name: str, data: bytes) -> str:
        """Writes (or replaces) a file; its ETag follows the content and its Last-Modified moves forward.
        Returns its URL path."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        previous = path.stat().st_mtime if path.exists() else 0.0
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        # Last-Modified has a one-second resolution: a replacement must show a later date.
        mtime = max(time.time(), previous + 1)
        os.utime(path, (mtime, mtime))
        return "/" + name

    def etag(self, name: str) -> str:
        return _etag((self.root / name).read_bytes())

    def last_modified(self, name: str) -> str:
        return email.utils.formatdate((self.root / name).stat().st_mtime, usegmt=True)

    def sent_bytes(self, path: str) -> int:
        with self._lock:
            return self.sent.get(path, 0)

    def requests_for(self, path: str, method: str = "GET") -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path and r.method == method]

    # Called by the handler threads.

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _body_started(self) -> None:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)

    def _body_ended(self) -> None:
        with self._lock:
            self.active -= 1

    def _count(self, path: str, n: int) -> None:
        with self._lock:
            self.sent[path] = self.sent.get(path, 0) + n


def _etag(data: bytes) -> str:
    # md5 (32 hex digits) on purpose: it never looks like a sha256 a downloader might verify against.
    return '"' + hashlib.md5(data).hexdigest() + '"'


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a throttled response to a vanished client must not hold stop() up
    files: RangeServer


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _serve(self, *, body: bool) -> None:
        files = self.server.files
        path = urlsplit(self.path).path
        files._record(RecordedRequest(self.command, path, {k.lower(): v for k, v in self.headers.items()}))
        linked = files.linked_etags.get(path)
        if path in files.statuses:
            self._empty(files.statuses[path], linked)
            return
        if path in files.redirects:
            self._empty(302, linked, location=files.redirects[path])
            return
        file = (files.root / unquote(path).lstrip("/")).resolve()
        if not file.is_relative_to(files.root.resolve()) or not file.is_file():
            self._empty(404, None)
            return
        data = file.read_bytes()
        size = len(data)
        etag = _etag(data)
        last_modified = email.utils.formatdate(file.stat().st_mtime, usegmt=True)

        status, start, end = 200, 0, size - 1
        wanted = _RANGE.match(self.headers.get("Range", "").strip())
        if (
            wanted
            and not files.ignore_ranges
            and self._if_range_holds(etag if files.send_etag else None, last_modified)
        ):
            first, last = wanted.groups()
            if first:
                start, end = int(first), min(int(last), size - 1) if last else size - 1
            elif last:  # suffix range: the last N bytes
                start = max(size - int(last), 0)
            if start >= size or start > end:
                self._empty(416, linked, content_range=f"bytes */{size}")
                return
            status = 206
            if files.ranges_from_zero:
                start, end = 0, size - 1

        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        if not files.ignore_ranges:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        if files.send_etag:
            self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_modified)
        if linked is not None:
            self.send_header("X-Linked-Etag", linked)
        self.end_headers()
        if body:
            self._send_body(path, memoryview(data)[start : end + 1])

    def _if_range_holds(self, etag: str | None, last_modified: str) -> bool:
        """No If-Range, or one naming the current representation (ETags compare strongly: weak never matches)."""
        validator = self.headers.get("If-Range")
        if validator is None:
            return True
        validator = validator.strip()
        if validator.startswith(('"', "W/")):
            return etag is not None and validator == etag
        return validator == last_modified

    def _send_body(self, path: str, data: memoryview) -> None:
        files = self.server.files
        files._body_started()
        try:
            if files.gate is not None:
                files.gate.wait(timeout=30)
            with files._lock:
                cut = files.cut_after.pop(path, None)
            if cut is not None:
                data = data[:cut]
                self.close_connection = True  # short of its Content-Length: the client sees a broken body
            for offset in range(0, len(data), files.piece):
                piece = data[offset : offset + files.piece]
                throttle = files.throttle
                if throttle and offset:
                    # paced before a piece, not after the last: once a client has the whole body the
                    # body is over (an active count that outlived it would see overlaps that are not there)
                    time.sleep(files.piece / throttle)
                self.wfile.write(piece)
                self.wfile.flush()
                files._count(path, len(piece))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (cancelled, killed): nothing to finish
        finally:
            files._body_ended()

    def _empty(self, status: int, linked: str | None, *, location: str = "", content_range: str = "") -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        if location:
            self.send_header("Location", location)
        if content_range:
            self.send_header("Content-Range", content_range)
        if linked is not None:
            self.send_header("X-Linked-Etag", linked)
        self.end_headers()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--throttle", type=float, default=None, help="bytes per second per response")
    parser.add_argument("--ignore-ranges", action="store_true")
    args = parser.parse_args(argv)
    server = RangeServer(
        args.root, host=args.host, port=args.port, throttle=args.throttle, ignore_ranges=args.ignore_ranges
    )
    print(json.dumps({"url": server.url}), flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
