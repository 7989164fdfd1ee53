"""The node agent's model downloader: a model's file from http(s), Hugging Face or a local path, resumable and verified.

Our own rather than huggingface_hub's: since 1.18 it no longer resumes a partial download left by another process.
A download writes `<file>.part` (with `<file>.part.json`, the URL and validator of those bytes), resumes it with
`Range` + `If-Range`, verifies the sha256 when one is known and renames the result into place atomically, so the
file under its final name is always whole. `<file>.lock` keeps two processes (or two commands) from downloading
the same file at once; a lock whose owner is gone is taken over.

Run by hand: `python -m aiwm_node.download --models-dir DIR --model-id ID --repository R --file-name F`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import inspect
import json
import logging
import os
import queue
import re
import shutil
import signal
import socket
import sys
import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

import psutil

from aiwm_node.fetch import Call, FetchError, Response, TooManyRedirects
from aiwm_node.files import write_atomically

if TYPE_CHECKING:
    from _hashlib import HASH

log = logging.getLogger(__name__)

T = TypeVar("T")
SourceKind = Literal["http", "huggingface", "local"]

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
HF_HOSTS = frozenset({"huggingface.co", "www.huggingface.co", "hf.co"})
HF_REPO_TYPES = frozenset({"datasets", "spaces"})  # URL prefixes of repositories that are not models

CONNECT_TIMEOUT = 30.0
READ_TIMEOUT = 60.0
PROGRESS_SECONDS = 1.0
PROGRESS_PERCENT = 5.0
# Received bytes are written at least this often, so a killed process loses little of its download.
FLUSH_SECONDS = 1.0
READ_SIZE = 256 << 10  # at most this much per read of the connection (a read returns what has arrived)
HASH_BEHIND = 32  # chunks the hashing may be behind the writing
DECODED = frozenset({"gzip", "x-gzip", "deflate"})  # answers compressed though identity was asked
LOCK_POLL_SECONDS = 0.25
# A lock file younger than this whose JSON is unreadable is being written by its creator, not abandoned.
LOCK_WRITE_GRACE_SECONDS = 30.0
DISK_MARGIN_BYTES = 64 << 20
DISK_MARGIN_FRACTION = 0.01

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes\s+\*/(\d+)$")
_HF_NAME = re.compile(r"^[\w.-]+$")

# The lock files this process holds now (absolute paths): a lock naming our own pid that is not in here was
# left by an earlier process that had the same pid (a container's agent is often pid 1 at every start).
_HELD_LOCKS: set[str] = set()


class DownloadError(Exception):
    """A download that did not happen. `code`: INVALID_SOURCE, NOT_FOUND, UNAUTHORIZED, HTTP_ERROR, NETWORK_ERROR,
    DISK_FULL, SHA256_MISMATCH, CANCELLED or IO_ERROR (the disk refused a read or write for another reason)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Source:
    """Where a model's file comes from. `file_name`: its name under the model's folder (http, huggingface)."""

    kind: SourceKind
    url: str | None = None
    path: Path | None = None
    file_name: str = ""
    # Hugging Face's Authorization: out of repr, so logging a source never prints the token.
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class DownloadProgress:
    downloaded: int
    total: int | None  # None: the server did not say
    percent: float  # 0 while the total is unknown


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    size: int
    sha256: str | None  # the digest computed by this call, when it computed one
    fetched_bytes: int  # received from the network by this call
    reused: bool  # nothing was downloaded: the file was already there (or is a local source)
    resumed_from: int  # the offset a partial download was resumed at (0: from the start)

    def as_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "size": self.size,
            "sha256": self.sha256,
            "fetchedBytes": self.fetched_bytes,
            "reused": self.reused,
            "resumedFrom": self.resumed_from,
        }


ProgressCallback = Callable[[DownloadProgress], Awaitable[None] | None]


# Sources.


def resolve_source(repository: str, file_name: str, *, env: Mapping[str, str] = os.environ) -> Source:
    """Where `file_name` of `repository` is: an http(s) folder URL, a Hugging Face repository (`hf://org/name`,
    `huggingface.co/org/name`, optionally `@revision` or `/tree/<revision>`) or a local absolute path or `file://`
    URL. Both come from the network: a file name must stay inside its folder."""
    name = _relative_name(file_name, what="fileName")
    repo = repository.strip()
    lowered = repo.lower()
    if not repo:
        raise DownloadError("INVALID_SOURCE", "the model has no repository")
    if lowered.startswith("hf://"):
        return _huggingface(repo[len("hf://") :], name, env)
    if lowered.startswith("file://"):
        parts = urlsplit(repo)
        if parts.netloc not in ("", "localhost"):
            raise DownloadError("INVALID_SOURCE", f"a file URL on another host: {repository!r}")
        return _local(unquote(parts.path), name, repository)
    if lowered.startswith(("http://", "https://")):
        parts = urlsplit(repo)
        if (parts.hostname or "").lower() in HF_HOSTS:
            return _huggingface(parts.path, name, env)
        return _http(parts, name, repository)
    if lowered.split("/", 1)[0] in HF_HOSTS:
        return _huggingface(repo.partition("/")[2], name, env)
    if repo.startswith("/"):
        return _local(repo, name, repository)
    raise DownloadError(
        "INVALID_SOURCE", f"not an http(s) URL, a Hugging Face repository or an absolute path: {repository!r}"
    )


def _relative_name(name: str, *, what: str) -> str:
    """`name` as a plain relative POSIX path ("" stays ""), refusing anything that could leave its folder."""
    if not name:
        return ""
    parts = PurePosixPath(name).parts
    if "\x00" in name or "\\" in name or name.startswith("/") or ".." in parts or not parts:
        raise DownloadError("INVALID_SOURCE", f"{what} must be a plain relative name: {name!r}")
    return "/".join(parts)


def _http(parts: SplitResult, name: str, repository: str) -> Source:
    if not parts.hostname:
        raise DownloadError("INVALID_SOURCE", f"no host in {repository!r}")
    if name:
        path = parts.path.rstrip("/") + "/" + quote(name)
    elif parts.path.strip("/"):
        path = parts.path  # the URL is the file itself
        name = _relative_name(unquote(parts.path.rstrip("/").rsplit("/", 1)[-1]), what="the URL's file name")
    else:
        raise DownloadError("INVALID_SOURCE", f"no fileName and {repository!r} names no file")
    url = urlunsplit((parts.scheme.lower(), parts.netloc, path, parts.query, ""))
    return Source("http", url=url, file_name=name)


def _huggingface(spec: str, name: str, env: Mapping[str, str]) -> Source:
    parts = [p for p in spec.split("/") if p]
    prefix = parts.pop(0) + "/" if parts and parts[0] in HF_REPO_TYPES else ""
    if len(parts) < 2:
        raise DownloadError("INVALID_SOURCE", f"not a Hugging Face repository (org/name): {spec!r}")
    org, repo_name, rest = parts[0], parts[1], parts[2:]
    revision = "main"
    if "@" in repo_name:
        repo_name, _, revision = repo_name.partition("@")
    elif len(rest) >= 2 and rest[0] in ("tree", "resolve", "blob"):
        revision, rest = rest[1], rest[2:]
    revision = unquote(revision)
    if not (_HF_NAME.match(org) and _HF_NAME.match(repo_name)) or {org, repo_name} & {".", ".."} or not revision:
        raise DownloadError("INVALID_SOURCE", f"not a Hugging Face repository (org/name[@revision]): {spec!r}")
    # A path after the repository (`/resolve/<rev>/sub/file`, `hf://org/name/sub`) is a folder of the file name.
    path = _relative_name("/".join([unquote(p) for p in rest] + ([name] if name else [])), what="the file path")
    if not path:
        raise DownloadError("INVALID_SOURCE", "a Hugging Face repository needs a fileName")
    endpoint = (env.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")
    # Revisions such as refs/pr/1 travel as one path segment, as huggingface_hub sends them.
    url = f"{endpoint}/{prefix}{org}/{repo_name}/resolve/{quote(revision, safe='')}/{quote(path)}"
    token = env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Source("huggingface", url=url, file_name=path, headers=headers)


def _local(path: str, name: str, repository: str) -> Source:
    if not path.startswith("/"):
        raise DownloadError("INVALID_SOURCE", f"a local source must be an absolute path: {repository!r}")
    return Source("local", path=Path(path) / name if name else Path(path), file_name=name)


def _expected_sha256(sha256: str | None) -> str | None:
    if sha256 is None or not sha256.strip():
        return None
    digest = sha256.strip().lower().removeprefix("sha256:")
    if not _SHA256.match(digest):
        raise DownloadError("INVALID_SOURCE", f"sha256 is not 64 hexadecimal digits: {sha256!r}")
    return digest


def safe_model_dir(model_id: str) -> str:
    """The model's folder name: its id when that is a safe name, else a cleaned one with a hash of the id (so two
    ids that clean alike still get two folders)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", model_id).lstrip(".")
    if cleaned == model_id and cleaned:
        return cleaned
    return f"{cleaned[:64] or 'model'}-{hashlib.sha256(model_id.encode()).hexdigest()[:12]}"


# The downloader.


def _disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


class Downloader:
    """Fetches models' files into `models_dir/<model id>/<file name>`, at most `max_parallel` at a time.

    One instance per event loop (its semaphore belongs to the loop that first waits on it)."""

    def __init__(
        self,
        models_dir: Path,
        *,
        owner: str,
        max_parallel: int = 2,
        chunk_size: int = 512 << 10,
        free_space: Callable[[Path], int] = _disk_free,
        env: Mapping[str, str] | None = None,
        lock_poll_seconds: float = LOCK_POLL_SECONDS,
    ) -> None:
        self.models_dir = models_dir
        self.owner = owner
        # Received bytes are written and hashed `chunk_size` at a time (small: what a kill loses is about one).
        self.chunk_size = chunk_size
        self._free_space = free_space
        self._env = env  # None: os.environ as it is at each fetch
        self._lock_poll_seconds = lock_poll_seconds
        self._slots = asyncio.Semaphore(max_parallel)

    def target_path(self, model_id: str, file_name: str) -> Path:
        return self.models_dir / safe_model_dir(model_id) / file_name

    async def fetch(
        self,
        *,
        model_id: str,
        repository: str,
        file_name: str,
        sha256: str | None = None,
        progress: ProgressCallback | None = None,
        cancel: asyncio.Event | None = None,
    ) -> DownloadResult:
        """Makes the model's file present and returns where it is. Raises DownloadError."""
        expected = _expected_sha256(sha256)
        source = resolve_source(repository, file_name, env=os.environ if self._env is None else self._env)
        if cancel is not None and cancel.is_set():
            raise DownloadError("CANCELLED", "cancelled before it started")
        reporter = _Reporter(progress)
        if source.kind == "local":
            return await _until_cancelled(self._local(source, expected, reporter), cancel)
        return await _until_cancelled(self._remote(model_id, source, expected, reporter), cancel)

    async def _local(self, source: Source, expected: str | None, reporter: _Reporter) -> DownloadResult:
        """A local source is used where it is (no copy), once it is known to exist and to match its sha256."""
        assert source.path is not None
        path = source.path
        if path.is_dir() and not source.file_name:
            # A model server may take a folder (a Hugging Face checkout): nothing to verify it against.
            if expected:
                raise DownloadError("INVALID_SOURCE", f"{path} is a folder: it has no sha256")
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            await reporter.done(size)
            return DownloadResult(path, size, None, 0, True, 0)
        if not path.is_file():
            raise DownloadError("NOT_FOUND", f"no file {path}")
        size = path.stat().st_size
        digest = None
        if expected:
            digest = await asyncio.to_thread(_hash_file, path, self.chunk_size)
            if digest != expected:
                # The operator's file: reported, never deleted.
                raise DownloadError("SHA256_MISMATCH", f"{path} has sha256 {digest}, the model says {expected}")
        await reporter.done(size)
        return DownloadResult(path, size, digest, 0, True, 0)

    async def _remote(self, model_id: str, source: Source, expected: str | None, reporter: _Reporter) -> DownloadResult:
        target = self.target_path(model_id, source.file_name)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _io_error(exc, target.parent) from exc
        async with self._locked(target), self._slots:
            present = await self._present(source, target, expected)
            if present is not None:
                await reporter.done(present.size)
                return present
            return await self._download(source, target, expected, reporter)

    async def _present(self, source: Source, target: Path, expected: str | None) -> DownloadResult | None:
        """The target when it is already the model's file: same sha256 when one is known, else the same size as
        the server's (a HEAD request)."""
        assert source.url is not None
        if not target.is_file():
            return None
        size = target.stat().st_size
        if expected:
            digest = await asyncio.to_thread(_hash_file, target, self.chunk_size)
            if digest == expected:
                return DownloadResult(target, size, digest, 0, True, 0)
            log.warning("%s has sha256 %s, the model says %s: downloading it again", target, digest, expected)
            return None
        response = await _request(source.url, _request_headers(source), method="HEAD")
        if response.status_code in (405, 501):
            log.info("%s does not answer HEAD (%d): downloading %s again", source.url, response.status_code, target)
            return None
        _raise_for_status(response, source.url)
        length = _content_length(response)
        if response.status_code == 200 and length == size:
            return DownloadResult(target, size, None, 0, True, 0)
        log.info("%s has %d bytes, the server %s: downloading it again", target, size, length)
        return None

    async def _download(
        self, source: Source, target: Path, expected: str | None, reporter: _Reporter
    ) -> DownloadResult:
        assert source.url is not None
        part = target.with_name(target.name + ".part")
        sidecar = target.with_name(target.name + ".part.json")
        for _attempt in range(3):  # a range the server answers wrongly costs one more request from 0
            offset, validator = _partial_state(part, sidecar, source.url, expected)
            headers = _request_headers(source)
            if offset and validator:
                headers["Range"] = f"bytes={offset}-"
                headers["If-Range"] = validator
            else:
                offset = 0
            response = await _request(source.url, headers, method="GET")
            try:
                status = response.status_code
                if status == 416 and offset:
                    total = _unsatisfied_total(response)
                    if total == offset:  # the partial was whole: it only lacked its rename
                        hint = expected or _digest_from_headers(response, source.kind)
                        return await self._finish(part, sidecar, target, offset, None, hint, 0, offset, reporter)
                    log.info("%s: the server refused range %d- (size %s): starting over", source.url, offset, total)
                    _discard(part, sidecar)
                    continue
                _raise_for_status(response, source.url)
                encoded = response.encoding != "identity"
                if encoded and response.encoding not in DECODED:
                    raise DownloadError("HTTP_ERROR", f"{source.url} answered in {response.encoding!r}, unasked")
                if status == 206:
                    start, total = _content_range(response)
                    if start != offset or encoded:
                        log.info("%s: answered range %d- with %s: starting over", source.url, offset, start)
                        _discard(part, sidecar)
                        continue
                    length = _content_length(response)
                    total = total if total is not None else None if length is None else offset + length
                elif status == 200:
                    if offset:
                        log.info("%s: the server sent the whole file (range %d- not honoured)", source.url, offset)
                    offset = 0
                    total = None if encoded else _content_length(response)
                else:
                    raise DownloadError("HTTP_ERROR", f"{source.url} answered {status}")
                return await self._receive(response, source, part, sidecar, target, offset, total, expected, reporter)
            finally:
                response.close()
        raise DownloadError("HTTP_ERROR", f"{source.url} kept answering ranges wrongly")

    async def _receive(
        self,
        response: Response,
        source: Source,
        part: Path,
        sidecar: Path,
        target: Path,
        offset: int,
        total: int | None,
        expected: str | None,
        reporter: _Reporter,
    ) -> DownloadResult:
        """Streams the response's body onto the partial file (appended at `offset`, or a new one from 0)."""
        remaining = None if total is None else total - offset
        if remaining is not None:
            margin = max(DISK_MARGIN_BYTES, int(remaining * DISK_MARGIN_FRACTION))
            free = self._free_space(target.parent)
            if remaining + margin > free:
                raise DownloadError(
                    "DISK_FULL", f"{remaining} bytes to write (+{margin} margin), {free} free in {target.parent}"
                )
        hint = expected or _digest_from_headers(response, source.kind)
        try:
            hasher = await asyncio.to_thread(_hash_prefix, part, offset, self.chunk_size)
            # The validator is recorded before the first byte, so whatever lands in the partial can be resumed.
            validator = None if response.encoding != "identity" else _validator(response)
            if validator:
                _write_sidecar(sidecar, {"url": source.url, "validator": validator, "total": total, "sha256": expected})
            else:
                sidecar.unlink(missing_ok=True)
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if offset else os.O_TRUNC), 0o644)
        except OSError as exc:
            raise _io_error(exc, part) from exc
        pump = _Pump(response, fd, offset, hasher, self.chunk_size)
        running = asyncio.ensure_future(asyncio.to_thread(pump.run))
        try:
            await reporter.update(offset, total)
            while not running.done():
                await asyncio.wait({running}, timeout=PROGRESS_SECONDS / 4)
                await reporter.update(offset + pump.received, total)
            running.result()
            received = pump.written
            size = offset + received
            if total is not None and size != total:
                raise DownloadError("NETWORK_ERROR", f"{source.url}: the body ended at {size} of {total} bytes")
            await _to_thread_to_the_end(os.fsync, fd)
        except FetchError as exc:
            raise DownloadError("NETWORK_ERROR", f"{source.url}: {exc}") from exc
        except OSError as exc:
            raise _io_error(exc, part) from exc
        except BaseException:
            # Cancelled: the connection is ended under the reading thread, which then writes what arrived (good
            # bytes, for the next attempt to resume after) before it ends; only then is the file closed.
            pump.stop()
            await _join(running)
            raise
        finally:
            os.close(fd)
        return await self._finish(part, sidecar, target, size, hasher, hint, received, offset, reporter)

    async def _finish(
        self,
        part: Path,
        sidecar: Path,
        target: Path,
        size: int,
        hasher: HASH | None,
        hint: str | None,
        fetched: int,
        resumed_from: int,
        reporter: _Reporter,
    ) -> DownloadResult:
        """Verifies the whole partial file and renames it into place (atomically: the target is never partial)."""
        if hasher is None:
            hasher = await asyncio.to_thread(_hash_prefix, part, size, self.chunk_size)
        digest: str = hasher.hexdigest()
        if hint and digest != hint:
            _discard(part, sidecar)
            raise DownloadError("SHA256_MISMATCH", f"{target.name} has sha256 {digest}, expected {hint}")
        try:
            os.replace(part, target)
            sidecar.unlink(missing_ok=True)
            _fsync_dir(target.parent)
        except OSError as exc:
            raise _io_error(exc, target) from exc
        await reporter.done(size)
        return DownloadResult(target, size, digest, fetched, False, resumed_from)

    @contextlib.asynccontextmanager
    async def _locked(self, target: Path) -> AsyncIterator[None]:
        """Holds `<target>.lock` (JSON: pid, owner, host, startedAt) for the block: waits while a live owner holds
        it, takes it over from an owner that is gone."""
        lock = target.with_name(target.name + ".lock")
        key = str(lock.absolute())
        content = json.dumps(
            {
                "pid": os.getpid(),
                "owner": self.owner,
                "host": socket.gethostname(),
                "startedAt": datetime.now(UTC).isoformat(),
                # Tells a live process that reuses a dead owner's pid from that owner.
                "processStartedAt": _process_started_at(),
            }
        ).encode()
        waiting_for = b""
        while not _create_lock(lock, content):
            seen = _read_bytes(lock)
            if seen is None:
                continue  # released between our attempt and our look: try again at once
            stale = _stale_reason(lock, seen, key)
            if stale:
                log.warning("taking over %s: %s", lock, stale)
                _break_lock(lock, seen)
                continue
            if seen != waiting_for:
                log.info("waiting for %s, held by %s", lock, seen.decode(errors="replace"))
                waiting_for = seen
            await asyncio.sleep(self._lock_poll_seconds)
        _HELD_LOCKS.add(key)
        try:
            yield
        finally:
            _HELD_LOCKS.discard(key)
            # Only our own lock: one wrongly taken over from us is the new owner's to release.
            if _read_bytes(lock) == content:
                with contextlib.suppress(OSError):
                    lock.unlink()


# Locks.


def _create_lock(lock: Path, content: bytes) -> bool:
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    except OSError as exc:
        raise _io_error(exc, lock) from exc
    try:
        os.write(fd, content)
    finally:
        os.close(fd)
    return True


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _process_started_at(pid: int | None = None) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _stale_reason(lock: Path, seen: bytes, key: str) -> str:
    """Why the lock's owner is gone ("" while it may be alive)."""
    try:
        info = json.loads(seen)
        pid = int(info["pid"])
        if pid <= 0:
            raise ValueError(pid)
    except (ValueError, KeyError, TypeError):
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return ""
        return f"unreadable for {age:.0f} s" if age > LOCK_WRITE_GRACE_SECONDS else ""
    if info.get("host") != socket.gethostname():
        return ""  # another machine's process (a shared models folder): we cannot tell whether it lives
    if pid == os.getpid():
        return "" if key in _HELD_LOCKS else f"left by an earlier process with our pid {pid}"
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return f"its owner, pid {pid}, has exited"
        started = info.get("processStartedAt")
        if isinstance(started, int | float) and abs(process.create_time() - started) > 1:
            return f"its owner, pid {pid}, has exited (the pid now belongs to another process)"
    except psutil.NoSuchProcess:
        return f"its owner, pid {pid}, has exited"
    except psutil.Error:
        return ""  # not ours to inspect (AccessDenied): alive
    return ""


def _break_lock(lock: Path, seen: bytes) -> None:
    """Removes a stale lock if it still holds what we judged stale. Serialised by an flock on the folder, so two
    takers cannot both break it: the second would find the first's new lock and leave it."""
    fd = os.open(lock.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _read_bytes(lock) == seen:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
    finally:
        os.close(fd)  # releases the flock


# Partial files.


def _partial_state(part: Path, sidecar: Path, url: str, expected: str | None) -> tuple[int, str | None]:
    """The partial download's size and validator, when it can be resumed; otherwise it is deleted: (0, None)."""
    if not part.exists():
        sidecar.unlink(missing_ok=True)
        return 0, None
    try:
        info = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        info = None
    if not isinstance(info, dict) or info.get("url") != url or not info.get("validator"):
        reason = "its URL differs" if isinstance(info, dict) and info.get("url") != url else "it has no validator"
    elif expected and info.get("sha256") not in (None, expected):
        reason = "it was downloaded for another sha256"
    else:
        return part.stat().st_size, str(info["validator"])
    log.info("discarding %s: %s", part, reason)
    _discard(part, sidecar)
    return 0, None


def _write_sidecar(sidecar: Path, info: dict[str, Any]) -> None:
    write_atomically(sidecar, json.dumps(info))


def _discard(part: Path, sidecar: Path) -> None:
    part.unlink(missing_ok=True)
    sidecar.unlink(missing_ok=True)


def _hash_file(path: Path, block: int) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while data := f.read(block):
            hasher.update(data)
    return hasher.hexdigest()


def _hash_prefix(path: Path, size: int, block: int) -> HASH:
    """A sha256 object fed with the first `size` bytes of `path` (the partial download being resumed)."""
    hasher = hashlib.sha256()
    if size:
        with path.open("rb") as f:
            left = size
            while left and (data := f.read(min(block, left))):
                hasher.update(data)
                left -= len(data)
    return hasher


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Pump:
    """A response's body onto the partial file, in three threads: the one that runs `run` receives, a second
    hashes, a third writes, each chunk handed to both (to the writer first). http.client's reads,
    hashlib and os.write release the GIL, so they use the machine's cores side by side and the receiving
    never waits for the hashing (SHA-256 is 1.7 GiB/s on a core here, but shares the cores). What arrives is handed
    over `chunk_size` at a time, and at least every FLUSH_SECONDS, so a killed agent loses about a second of
    its download at most; what arrived before the connection broke or the download was stopped is written
    all the same (good bytes, resumed after). The file is written in order, by one thread."""

    def __init__(self, response: Response, fd: int, start: int, hasher: HASH, chunk_size: int) -> None:
        self.response, self.fd, self.start, self.hasher, self.chunk_size = response, fd, start, hasher, chunk_size
        self.decoder = zlib.decompressobj(zlib.MAX_WBITS | 32) if response.encoding in DECODED else None
        self.received = 0  # bytes off the connection: the progress
        self.written = 0  # bytes in the file (decoded)
        self.stopping = False
        # The hasher may fall behind by more than the writer: a reader waiting for it would leave the bytes in
        # the sockets' buffers, where a kill loses them; once written, a chunk waiting to be hashed costs memory
        # only (HASH_BEHIND chunks at most).
        self._to_hash: queue.Queue[bytes | None] = queue.Queue(maxsize=HASH_BEHIND)
        self._to_write: queue.Queue[bytes | None] = queue.Queue(maxsize=1)
        self._write_error: OSError | None = None

    def stop(self) -> None:
        """From any thread: the body is no longer read (a read blocked on the connection is woken)."""
        self.stopping = True
        self.response.abort()

    def run(self) -> None:
        """Raises FetchError when the connection failed, OSError when the file could not be written."""
        workers = [
            threading.Thread(target=self._hash_all, name="aiwm-node-download-hasher", daemon=True),
            threading.Thread(target=self._write_all, name="aiwm-node-download-writer", daemon=True),
        ]
        for worker in workers:
            worker.start()
        pending: list[bytes] = []
        pending_bytes, handed_at = 0, time.monotonic()
        broken: FetchError | None = None
        try:
            while not self.stopping and self._write_error is None:
                data = self.response.read1(READ_SIZE)
                if not data:
                    if self.decoder is not None:
                        pending.append(self.decoder.flush())
                    break
                self.received += len(data)
                pending.append(data if self.decoder is None else self.decoder.decompress(data))
                pending_bytes += len(pending[-1])
                if pending_bytes >= self.chunk_size or time.monotonic() - handed_at >= FLUSH_SECONDS:
                    self._hand_over(pending[0] if len(pending) == 1 else b"".join(pending))
                    pending, pending_bytes, handed_at = [], 0, time.monotonic()
        except FetchError as exc:
            broken = exc
        except zlib.error as exc:
            broken = FetchError(f"the compressed body is damaged: {exc}")
        finally:
            if pending:
                self._hand_over(b"".join(pending))
            self._hand_over(None)
            for worker in workers:
                worker.join()
        if self._write_error is not None:
            raise self._write_error
        if broken is not None and not self.stopping:
            raise broken

    def _hand_over(self, data: bytes | None) -> None:
        # To the writer first: a chunk waiting for the (slower) hasher is still written meanwhile, so a kill
        # loses only what the writer has not reached.
        self._to_write.put(data)
        self._to_hash.put(data)

    def _hash_all(self) -> None:
        # A failed write ends the download, and the next attempt hashes its partial again: this one may run ahead.
        while (data := self._to_hash.get()) is not None:
            self.hasher.update(data)

    def _write_all(self) -> None:
        while (data := self._to_write.get()) is not None:
            if self._write_error is not None:
                continue  # drained, so the reader is never blocked on a full queue
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd, view) :]
                _start_writeback(self.fd, self.start + self.written, len(data))
                self.written += len(data)
            except OSError as exc:
                self._write_error = exc


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Has the kernel start writing these bytes to disk now (and drop them from the page cache once written):
    the fsync before the rename then waits for little, instead of for the whole file (a second per GiB or
    more), and a 100 GiB model does not push everything else out of the page cache."""
    if hasattr(os, "posix_fadvise"):  # Linux; elsewhere the fsync does it all at the end
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


async def _join(running: asyncio.Future[Any]) -> None:
    """Waits for a worker thread's task to end, even when the waiting is cancelled meanwhile (then re-raised)."""
    cancelled = False
    while not running.done():
        try:
            await asyncio.wait({running})
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


async def _to_thread_to_the_end(func: Callable[..., T], *args: Any) -> T:
    """func in a worker thread; a cancelled caller still waits for it, so writes to one file never overlap."""
    future = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait({future})
        raise


# HTTP.


def _request_headers(source: Source) -> dict[str, str]:
    # identity: byte ranges and Content-Length then count the file's own bytes, not a compressed form of them.
    return {**source.headers, "Accept-Encoding": "identity"}


async def _request(url: str, headers: dict[str, str], *, method: str) -> Response:
    """The answer's status and headers (redirects followed), from a worker thread; a cancelled caller ends the
    connection under it and the thread's late answer, if any, is closed."""
    call = Call(url, headers, method=method, connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT)
    opening = asyncio.ensure_future(asyncio.to_thread(call.open))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        call.abort()
        opening.add_done_callback(_close_late_answer)
        raise
    except TooManyRedirects as exc:
        raise DownloadError("HTTP_ERROR", f"{url}: {exc}") from exc
    except FetchError as exc:
        raise DownloadError("NETWORK_ERROR", f"{url}: {exc}") from exc


def _close_late_answer(opening: asyncio.Future[Response]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def _raise_for_status(response: Response, url: str) -> None:
    status = response.status_code
    if status == 404:
        raise DownloadError("NOT_FOUND", f"{url} was not found (404)")
    if status in (401, 403):
        raise DownloadError("UNAUTHORIZED", f"{url} refused access ({status}): a token (HF_TOKEN) may be needed")
    if status >= 400:
        raise DownloadError("HTTP_ERROR", f"{url} answered {status}")


def _io_error(exc: OSError, path: Path | None) -> DownloadError:
    where = f" ({path})" if path is not None else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DownloadError("DISK_FULL", f"the disk is full{where}: {exc}")
    return DownloadError("IO_ERROR", f"{exc}{where}")


def _content_length(response: Response) -> int | None:
    try:
        return int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None


def _content_range(response: Response) -> tuple[int | None, int | None]:
    """A 206's first byte and the file's total size (None when unknown)."""
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
    if not match:
        return None, None
    return int(match[1]), None if match[3] == "*" else int(match[3])


def _unsatisfied_total(response: Response) -> int | None:
    match = _UNSATISFIED_RANGE.match(response.headers.get("Content-Range", "").strip())
    return int(match[1]) if match else None


def _validator(response: Response) -> str | None:
    """What If-Range may send back: a strong ETag, else Last-Modified (a weak ETag never matches in If-Range)."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


def _digest_from_headers(response: Response, kind: SourceKind) -> str | None:
    """The sha256 the server vouches for: Hugging Face's X-Linked-Etag (sent with the redirect to its CDN) or, from
    Hugging Face, an ETag that is a sha256. Another server's 64-hex ETag may hash something else: not trusted."""
    for headers in [*(hop.headers for hop in response.history), response.headers]:
        for name in ("X-Linked-Etag", "ETag") if kind == "huggingface" else ("X-Linked-Etag",):
            value = headers.get(name, "").strip().removeprefix("W/").strip('"').lower()
            if _SHA256.match(value):
                return value
    return None


# Progress and cancellation.


class _Reporter:
    """Calls the progress callback about once a second or every few percent, and once at 100 %."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.reported_at = float("-inf")
        self.reported_percent = float("-inf")

    async def update(self, downloaded: int, total: int | None) -> None:
        if self.callback is None or (total is not None and downloaded >= total):
            return  # 100 % is done()'s to say, once the file is in place
        percent = round(downloaded * 100 / total, 1) if total else 0.0
        now = time.monotonic()
        if now - self.reported_at >= PROGRESS_SECONDS or percent - self.reported_percent >= PROGRESS_PERCENT:
            self.reported_at, self.reported_percent = now, percent
            await self._emit(DownloadProgress(downloaded, total, percent))

    async def done(self, size: int) -> None:
        if self.callback is not None:
            await self._emit(DownloadProgress(size, size, 100.0))

    async def _emit(self, progress: DownloadProgress) -> None:
        assert self.callback is not None
        try:
            result = self.callback(progress)
            if inspect.isawaitable(result):
                await result
        except Exception:
            # A report that could not be sent (the connection dropped) is no reason to drop the download.
            log.exception("progress report failed")


async def _until_cancelled(coro: Coroutine[Any, Any, T], cancel: asyncio.Event | None) -> T:
    """Runs coro, cancelling it (and raising CANCELLED) as soon as `cancel` is set, even mid-read of a stalled
    connection; its own cleanup (lock release, partial kept) runs before this returns."""
    if cancel is None:
        return await coro
    task = asyncio.ensure_future(coro)
    waiter = asyncio.ensure_future(cancel.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    if task.cancelled():
        raise DownloadError("CANCELLED", "cancelled")
    error = task.exception()
    if error is not None:
        raise error
    return task.result()


# The command line.


async def _cli(args: argparse.Namespace) -> DownloadResult:
    cancel = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, cancel.set)
    downloader = Downloader(args.models_dir, owner=args.owner, max_parallel=1, chunk_size=args.chunk_size)

    def show(progress: DownloadProgress) -> None:
        if args.progress:
            print(json.dumps({"progress": dataclasses.asdict(progress)}), file=sys.stderr, flush=True)

    return await downloader.fetch(
        model_id=args.model_id,
        repository=args.repository,
        file_name=args.file_name,
        sha256=args.sha256,
        progress=show,
        cancel=cancel,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aiwm_node.download", description="Download one model's file.")
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--model-id", required=True)
    parser.add_argument("--repository", required=True)
    parser.add_argument("--file-name", default="")
    parser.add_argument("--sha256", default=None)
    parser.add_argument("--owner", default="aiwm_node.download")
    parser.add_argument("--chunk-size", type=int, default=1 << 20)
    parser.add_argument("--progress", action="store_true", help="progress as JSON lines on stderr")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        result = asyncio.run(_cli(args))
    except DownloadError as exc:
        print(json.dumps({"error": {"code": exc.code, "message": exc.message}}), flush=True)
        return 1
    print(json.dumps(result.as_json()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
