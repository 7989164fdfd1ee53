"""The local HTTP file server both clients download from, in a process of its own: the measured
client must not share a GIL (or a CPU accounting) with the server it measures against.

Two kinds, the same RangeServer underneath (tests/support/range_server.py: byte ranges, If-Range,
ETag and Last-Modified, the per-path counters of body bytes written to sockets):

- "range": RangeServer exactly as the downloader's tests use it. For each request it reads the
  whole file into memory and takes its md5 (its ETag) before the first byte, then writes the body
  in 16 KiB pieces from Python: a slow server, the same for both clients;
- "sendfile": the same server with a handler that answers from the file's metadata (an
  nginx-style ETag of its mtime and size) and sends the body with sendfile(2), so the kernel, not
  Python, copies the bytes: what a real file server does, and the stricter test of a client,
  which is then the bottleneck.

The process speaks bench.harness.processes.LineProcess's line protocol: it prints
`{"event": "ready", "url": ...}`, then answers `stats` (the counters and the requests so far),
`throttle BYTES_PER_SECOND` (0: none) and `quit` read from stdin.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from bench.harness.processes import LineProcess

SERVERS = {
    "range": "RangeServer (tests/support/range_server.py: md5 of the file per request, 16 KiB writes)",
    "sendfile": "RangeServer with a sendfile(2) handler (ETag from mtime and size)",
}
SENDFILE_CHUNK = 1 << 20  # bytes per sendfile call: the counters move at least this often
READY_TIMEOUT_S = 30.0
ANSWER_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str  # the Range header ("" when none)
    if_range: str


@dataclass(frozen=True)
class Stats:
    sent: dict[str, int]  # URL path -> body bytes written to sockets
    requests: list[Request]


class FileServer:
    """The benchmark's side: the server process, its URL, its counters."""

    def __init__(self, kind: str, root: Path, env: dict[str, str], logdir: Path):
        self.kind = kind
        cfg = {"root": str(root), "kind": kind}
        self.process = LineProcess(__name__, f"fileserver-{kind}", 0, cfg, env, logdir)
        self.url: str = self.process.expect("ready", READY_TIMEOUT_S)["url"]

    @property
    def pid(self) -> int:
        return self.process.proc.pid

    def stats(self) -> Stats:
        self.process.send("stats")
        answer = self.process.expect("stats", ANSWER_TIMEOUT_S)
        return Stats({k: int(v) for k, v in answer["sent"].items()}, [Request(**r) for r in answer["requests"]])

    def throttle(self, bytes_per_second: float) -> None:
        self.process.send(f"throttle {bytes_per_second:g}")
        self.process.expect("throttle", ANSWER_TIMEOUT_S)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.process.send("quit")
        with contextlib.suppress(Exception):
            self.process.proc.wait(timeout=10)
        self.process.kill()


# The server process.


def _sendfile_handler() -> type:
    """A RangeServer handler that answers from the file's metadata and sends with sendfile(2).

    It reuses the range server's helpers (its request record, counters, If-Range rule and empty
    answers), so the two kinds differ only in how a body is produced."""
    from tests.support.range_server import _RANGE, RecordedRequest, _Handler

    class SendfileHandler(_Handler):
        def _serve(self, *, body: bool) -> None:
            files = self.server.files
            path = urlsplit(self.path).path
            files._record(RecordedRequest(self.command, path, {k.lower(): v for k, v in self.headers.items()}))
            file = (files.root / unquote(path).lstrip("/")).resolve()
            if not file.is_relative_to(files.root.resolve()) or not file.is_file():
                self._empty(404, None)
                return
            info = file.stat()
            size = info.st_size
            # nginx's form: no read of the content before the first byte.
            etag = f'"{info.st_mtime_ns:x}-{size:x}"'
            last_modified = email.utils.formatdate(info.st_mtime, usegmt=True)
            status, start, end = 200, 0, size - 1
            wanted = _RANGE.match(self.headers.get("Range", "").strip())
            if wanted and self._if_range_holds(etag, last_modified):
                first, last = wanted.groups()
                if first:
                    start, end = int(first), min(int(last), size - 1) if last else size - 1
                elif last:
                    start = max(size - int(last), 0)
                if start >= size or start > end:
                    self._empty(416, None, content_range=f"bytes */{size}")
                    return
                status = 206
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", last_modified)
            self.end_headers()
            if body:
                self._sendfile(path, file, start, end - start + 1)

        def _sendfile(self, path: str, file: Path, offset: int, count: int) -> None:
            import time

            files = self.server.files
            files._body_started()
            fd = os.open(file, os.O_RDONLY)
            try:
                out = self.connection.fileno()
                while count > 0:
                    throttle = files.throttle
                    n = os.sendfile(out, fd, offset, min(count, files.piece if throttle else SENDFILE_CHUNK))
                    if n == 0:
                        break
                    files._count(path, n)
                    offset += n
                    count -= n
                    if throttle:
                        time.sleep(n / throttle)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client went away (killed): nothing to finish
            finally:
                os.close(fd)
                files._body_ended()

    return SendfileHandler


def serve() -> None:
    from bench.harness.daemon import emit_line, read_config
    from tests.support.range_server import RangeServer

    cfg = read_config()
    server = RangeServer(Path(cfg["root"]))
    if cfg["kind"] == "sendfile":
        server._httpd.RequestHandlerClass = _sendfile_handler()
    server.start()  # a thread: this process's main thread only reads commands
    emit_line({"event": "ready", "url": server.url})
    try:
        for line in sys.stdin:
            command, _, argument = line.strip().partition(" ")
            if command == "stats":
                emit_line({"event": "stats", "sent": dict(server.sent), "requests": _requests(server)})
            elif command == "throttle":
                server.throttle = float(argument) or None
                emit_line({"event": "throttle"})
            elif command == "quit":
                break
    finally:
        server.stop()


def _requests(server: Any) -> list[dict[str, str]]:
    with server._lock:
        recorded = list(server.requests)
    return [
        {
            "method": r.method,
            "path": r.path,
            "range": r.headers.get("range", ""),
            "if_range": r.headers.get("if-range", ""),
        }
        for r in recorded
    ]


if __name__ == "__main__":
    serve()
