"""The node agent's model downloader (aiwm_node.download) against a real local HTTP server, real files and, for the
kill-and-resume case, a real process killed with SIGKILL."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import psutil
import pytest

from aiwm_node.download import Downloader, DownloadError, DownloadProgress, DownloadResult, resolve_source
from tests.support.environment import ROOT
from tests.support.range_server import RangeServer

KiB, MiB = 1 << 10, 1 << 20
WAIT_SECONDS = 20.0


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RangeServer]:
    with RangeServer(tmp_path / "served") as running:
        yield running


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return tmp_path / "models"


def downloader(models: Path, **options: object) -> Downloader:
    # Small chunks: a few-MiB test file still lands on disk in many writes (so interruptions leave a partial).
    settings: dict[str, object] = {"owner": "test", "chunk_size": 64 * KiB, "env": {}, "lock_poll_seconds": 0.05}
    settings.update(options)
    return Downloader(models, **settings)  # type: ignore[arg-type]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


async def async_wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def has_bytes(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def fetch(d: Downloader, server: RangeServer, name: str, model_id: str = "m1", **options: object) -> DownloadResult:
    call = d.fetch(model_id=model_id, repository=server.url, file_name=name, **options)  # type: ignore[arg-type]
    return asyncio.run(asyncio.wait_for(call, WAIT_SECONDS))  # a lock waited for wrongly fails, not hangs


def fetch_error(call: Awaitable[DownloadResult]) -> DownloadError:
    async def run() -> DownloadError:
        with pytest.raises(DownloadError) as caught:
            await call
        return caught.value

    return asyncio.run(run())


async def interrupt(d: Downloader, server: RangeServer, name: str, model_id: str = "m1") -> int:
    """Starts a throttled download, cancels it once bytes are on disk; returns the partial's size."""
    server.throttle = 256 * KiB
    cancel = asyncio.Event()
    part = d.target_path(model_id, name).with_name(name + ".part")
    task = asyncio.ensure_future(d.fetch(model_id=model_id, repository=server.url, file_name=name, cancel=cancel))
    await async_wait_until(lambda: has_bytes(part), "a partial file")
    cancel.set()
    with pytest.raises(DownloadError) as caught:
        await task
    assert caught.value.code == "CANCELLED"
    server.throttle = None
    return part.stat().st_size


# Sources.


@pytest.mark.parametrize(
    ("repository", "file_name", "kind", "where", "stored_as"),
    [
        ("https://example.com/models/", "a.gguf", "http", "https://example.com/models/a.gguf", "a.gguf"),
        (
            "https://example.com/models",
            "sub/a b.gguf",
            "http",
            "https://example.com/models/sub/a%20b.gguf",
            "sub/a b.gguf",
        ),
        ("http://example.com/files/a.gguf", "", "http", "http://example.com/files/a.gguf", "a.gguf"),
        ("https://example.com/get?sig=1", "a.gguf", "http", "https://example.com/get/a.gguf?sig=1", "a.gguf"),
        ("hf://org/name", "m.gguf", "huggingface", "https://huggingface.co/org/name/resolve/main/m.gguf", "m.gguf"),
        (
            "hf://org/name@v1.0",
            "m.gguf",
            "huggingface",
            "https://huggingface.co/org/name/resolve/v1.0/m.gguf",
            "m.gguf",
        ),
        (
            "huggingface.co/org/name",
            "m.gguf",
            "huggingface",
            "https://huggingface.co/org/name/resolve/main/m.gguf",
            "m.gguf",
        ),
        (
            "https://huggingface.co/org/name/tree/refs%2Fpr%2F1",
            "m.gguf",
            "huggingface",
            "https://huggingface.co/org/name/resolve/refs%2Fpr%2F1/m.gguf",
            "m.gguf",
        ),
        (
            "https://huggingface.co/org/name/resolve/main/q4/m.gguf",
            "",
            "huggingface",
            "https://huggingface.co/org/name/resolve/main/q4/m.gguf",
            "q4/m.gguf",
        ),
        (
            "hf://datasets/org/name",
            "d.csv",
            "huggingface",
            "https://huggingface.co/datasets/org/name/resolve/main/d.csv",
            "d.csv",
        ),
        ("/srv/models", "a.gguf", "local", "/srv/models/a.gguf", "a.gguf"),
        ("file:///srv/models/a%20b.gguf", "", "local", "/srv/models/a b.gguf", ""),
        ("file://localhost/srv/models", "a.gguf", "local", "/srv/models/a.gguf", "a.gguf"),
    ],
)
def test_sources_resolve(repository: str, file_name: str, kind: str, where: str, stored_as: str) -> None:
    source = resolve_source(repository, file_name, env={})
    assert source.kind == kind and source.file_name == stored_as
    assert (str(source.path) if kind == "local" else source.url) == where
    assert source.headers == {}


def test_hugging_face_honours_its_endpoint_and_token() -> None:
    env = {"HF_ENDPOINT": "http://mirror.local:8080/", "HF_TOKEN": "hf_secret"}
    for repository in ("hf://org/name", "https://huggingface.co/org/name", "huggingface.co/org/name"):
        source = resolve_source(repository, "m.gguf", env=env)
        assert source.url == "http://mirror.local:8080/org/name/resolve/main/m.gguf"
        assert source.headers == {"Authorization": "Bearer hf_secret"}
        assert "hf_secret" not in repr(source)
    # A plain http(s) server gets no Hugging Face token.
    assert resolve_source("https://example.com/m", "a", env=env).headers == {}


@pytest.mark.parametrize(
    ("repository", "file_name"),
    [
        ("https://example.com/m", "../a.gguf"),
        ("https://example.com/m", "sub/../../a.gguf"),
        ("https://example.com/m", "/etc/passwd"),
        ("https://example.com/m", "a\\..\\b"),
        ("/srv/models", "../../etc/shadow"),
        ("hf://org/name", ".."),
        ("hf://org/name", ""),
        ("hf://org", "a.gguf"),
        ("hf://../name", "a.gguf"),
        ("https://example.com/", ""),
        ("models/relative", "a.gguf"),
        ("ftp://example.com/m", "a.gguf"),
        ("file://elsewhere/srv/m", "a.gguf"),
        ("", "a.gguf"),
    ],
)
def test_sources_refused(repository: str, file_name: str) -> None:
    with pytest.raises(DownloadError) as caught:
        resolve_source(repository, file_name, env={})
    assert caught.value.code == "INVALID_SOURCE"


# Downloads.


def test_a_download_is_whole_verified_and_renamed_into_place(server: RangeServer, models: Path) -> None:
    data = payload(3 * MiB // 2)
    server.put("model.bin", data)
    reports: list[DownloadProgress] = []

    result = fetch(downloader(models), server, "model.bin", progress=reports.append)

    assert result.path == models / "m1" / "model.bin" and result.path.read_bytes() == data
    assert (result.size, result.sha256, result.fetched_bytes, result.reused, result.resumed_from) == (
        len(data),
        sha(data),
        len(data),
        False,
        0,
    )
    assert listing(models / "m1") == ["model.bin"]  # no .part, .part.json or .lock left
    # Progress: a few reports, not one per chunk, in order, the last one at 100 %.
    assert 2 <= len(reports) <= 25
    assert [r.downloaded for r in reports] == sorted(r.downloaded for r in reports)
    assert reports[-1] == DownloadProgress(len(data), len(data), 100.0)
    assert server.requests_for("/model.bin")[0].headers["accept-encoding"] == "identity"


def test_a_wrong_sha256_leaves_neither_the_file_nor_the_partial(server: RangeServer, models: Path) -> None:
    server.put("model.bin", payload(MiB))
    d = downloader(models)
    error = fetch_error(d.fetch(model_id="m1", repository=server.url, file_name="model.bin", sha256="0" * 64))
    assert error.code == "SHA256_MISMATCH"
    assert listing(models / "m1") == []


def test_hugging_face_via_its_cdn_with_the_linked_sha256_and_the_token(
    server: RangeServer, models: Path, tmp_path: Path
) -> None:
    """As huggingface.co does: the resolve URL redirects to a CDN (another origin) and carries the LFS file's sha256
    in X-Linked-Etag; the token goes to the hub only (httpx drops Authorization on a cross-origin redirect)."""
    data, other = payload(MiB, seed=1), payload(MiB, seed=2)
    server.put("blobs/good", data)
    server.put("blobs/bad", other)
    with RangeServer(tmp_path / "hub") as hub:
        for name, blob, digest in (("good.gguf", "good", sha(data)), ("bad.gguf", "bad", sha(data))):
            resolve = f"/org/name/resolve/main/{name}"
            hub.redirects[resolve] = f"{server.url}/blobs/{blob}"
            hub.linked_etags[resolve] = f'"{digest}"'
        d = downloader(models, env={"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_secret"})

        result = asyncio.run(d.fetch(model_id="m1", repository="hf://org/name", file_name="good.gguf"))
        assert result.path.read_bytes() == data and result.sha256 == sha(data)
        assert hub.requests_for("/org/name/resolve/main/good.gguf")[0].headers["authorization"] == "Bearer hf_secret"
        assert "authorization" not in server.requests_for("/blobs/good")[0].headers

        # The CDN's bytes are not what the hub vouched for: refused, nothing kept.
        error = fetch_error(d.fetch(model_id="m2", repository="huggingface.co/org/name", file_name="bad.gguf"))
        assert error.code == "SHA256_MISMATCH"
        assert listing(models / "m2") == []


def test_no_room_on_disk_refuses_before_writing(server: RangeServer, models: Path) -> None:
    server.put("model.bin", payload(MiB))
    asked: list[Path] = []

    def free_space(folder: Path) -> int:
        asked.append(folder)
        return 10 * MiB  # under the file plus the margin

    d = downloader(models, free_space=free_space)
    error = fetch_error(d.fetch(model_id="m1", repository=server.url, file_name="model.bin"))
    assert error.code == "DISK_FULL" and asked == [models / "m1"]
    assert listing(models / "m1") == []


def test_a_killed_download_resumes_and_its_lock_is_taken_over(server: RangeServer, models: Path) -> None:
    data = payload(2 * MiB, seed=3)
    server.put("big.bin", data)
    server.throttle = 256 * KiB  # about 8 s for the whole file: the kill lands mid-way
    command = [
        sys.executable,
        "-m",
        "aiwm_node.download",
        "--models-dir",
        str(models),
        "--model-id",
        "m1",
        "--repository",
        server.url,
        "--file-name",
        "big.bin",
        "--sha256",
        sha(data),
        "--chunk-size",
        str(64 * KiB),
        "--verbose",
    ]
    folder = models / "m1"
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: has_bytes(folder / "big.bin.part"), "the first process's partial file")
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    lock = json.loads((folder / "big.bin.lock").read_text())
    assert lock["pid"] == first.pid and lock["owner"] == "aiwm_node.download"
    assert set(lock) >= {"pid", "owner", "host", "startedAt"}
    partial = (folder / "big.bin.part").stat().st_size
    assert 0 < partial < len(data)

    server.throttle = None
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout.splitlines()[-1])
    assert result["resumedFrom"] == partial and result["fetchedBytes"] == len(data) - partial
    assert result["sha256"] == sha(data) and not result["reused"]
    assert "taking over" in second.stderr and f"pid {first.pid}" in second.stderr
    assert (folder / "big.bin").read_bytes() == data
    assert listing(folder) == ["big.bin"]
    # What the killed process received and did not write is all that was sent twice.
    assert server.sent_bytes("/big.bin") < 1.25 * len(data)
    resumed = server.requests_for("/big.bin")[-1].headers
    assert resumed["range"] == f"bytes={partial}-" and resumed["if-range"] == server.etag("big.bin")


def test_a_cancelled_download_keeps_its_partial_and_the_next_resumes(server: RangeServer, models: Path) -> None:
    data = payload(2 * MiB, seed=4)
    server.put("model.bin", data)
    d = downloader(models)

    partial = asyncio.run(interrupt(d, server, "model.bin"))
    assert listing(models / "m1") == ["model.bin.part", "model.bin.part.json"]  # the lock is released

    result = fetch(d, server, "model.bin")
    assert result.resumed_from == partial and result.fetched_bytes == len(data) - partial
    assert result.path.read_bytes() == data and result.sha256 == sha(data)
    assert server.sent_bytes("/model.bin") < 1.25 * len(data)


def test_a_broken_connection_keeps_what_arrived(server: RangeServer, models: Path) -> None:
    data = payload(MiB, seed=5)
    server.put("model.bin", data)
    server.cut_after["/model.bin"] = 300 * KiB  # not a multiple of the chunk: the tail is written on the way out
    d = downloader(models)

    error = fetch_error(d.fetch(model_id="m1", repository=server.url, file_name="model.bin"))
    assert error.code == "NETWORK_ERROR"
    assert (models / "m1" / "model.bin.part").stat().st_size == 300 * KiB

    result = fetch(d, server, "model.bin")
    assert result.resumed_from == 300 * KiB and result.path.read_bytes() == data
    assert server.sent_bytes("/model.bin") == len(data)  # not a byte twice


def test_resumes_on_last_modified_when_there_is_no_etag(server: RangeServer, models: Path) -> None:
    data = payload(MiB, seed=6)
    server.put("model.bin", data)
    server.send_etag = False
    server.cut_after["/model.bin"] = 256 * KiB
    d = downloader(models)
    assert fetch_error(d.fetch(model_id="m1", repository=server.url, file_name="model.bin")).code == "NETWORK_ERROR"

    result = fetch(d, server, "model.bin")
    assert result.resumed_from == 256 * KiB and result.path.read_bytes() == data
    assert server.requests_for("/model.bin")[-1].headers["if-range"] == server.last_modified("model.bin")


def test_a_server_ignoring_ranges_means_starting_over(server: RangeServer, models: Path) -> None:
    data = payload(MiB, seed=7)
    server.put("model.bin", data)
    d = downloader(models)
    partial = asyncio.run(interrupt(d, server, "model.bin"))
    server.ignore_ranges = True

    result = fetch(d, server, "model.bin")
    assert server.requests_for("/model.bin")[-1].headers["range"] == f"bytes={partial}-"
    assert result.resumed_from == 0 and result.fetched_bytes == len(data)
    assert result.path.read_bytes() == data


def test_a_range_answered_from_elsewhere_means_starting_over(server: RangeServer, models: Path) -> None:
    data = payload(MiB, seed=16)
    server.put("model.bin", data)
    server.cut_after["/model.bin"] = 256 * KiB
    d = downloader(models)
    assert fetch_error(d.fetch(model_id="m1", repository=server.url, file_name="model.bin")).code == "NETWORK_ERROR"
    server.ranges_from_zero = True  # 206 with Content-Range: bytes 0-...: not the bytes after the partial

    result = fetch(d, server, "model.bin")
    ranged, fresh = server.requests_for("/model.bin")[-2:]
    assert ranged.headers["range"] == f"bytes={256 * KiB}-" and "range" not in fresh.headers
    assert result.resumed_from == 0 and result.path.read_bytes() == data


@pytest.mark.parametrize("validator", ["etag", "last-modified"])
def test_a_file_replaced_on_the_server_means_starting_over(server: RangeServer, models: Path, validator: str) -> None:
    old, new = payload(MiB, seed=8), payload(MiB + 123, seed=9)
    server.put("model.bin", old)
    server.send_etag = validator == "etag"
    server.cut_after["/model.bin"] = 512 * KiB
    d = downloader(models)
    assert fetch_error(d.fetch(model_id="m1", repository=server.url, file_name="model.bin")).code == "NETWORK_ERROR"
    sent_validator = server.etag("model.bin") if validator == "etag" else server.last_modified("model.bin")
    server.put("model.bin", new)

    result = fetch(d, server, "model.bin")
    assert server.requests_for("/model.bin")[-1].headers["if-range"] == sent_validator
    assert result.resumed_from == 0 and result.path.read_bytes() == new and result.sha256 == sha(new)


def test_a_whole_partial_that_missed_its_rename_is_finished(server: RangeServer, models: Path) -> None:
    """A process killed between its last write and its rename: the server answers 416 to the range after the end."""
    data = payload(MiB, seed=10)
    server.put("model.bin", data)
    folder = models / "m1"
    folder.mkdir(parents=True)
    (folder / "model.bin.part").write_bytes(data)
    sidecar = {"url": f"{server.url}/model.bin", "validator": server.etag("model.bin")}
    (folder / "model.bin.part.json").write_text(json.dumps(sidecar))

    result = fetch(downloader(models), server, "model.bin", sha256=sha(data))
    assert (result.resumed_from, result.fetched_bytes, result.sha256) == (len(data), 0, sha(data))
    assert listing(folder) == ["model.bin"] and server.sent_bytes("/model.bin") == 0


def test_a_file_already_present_is_not_fetched_again(server: RangeServer, models: Path) -> None:
    data = payload(MiB, seed=11)
    server.put("model.bin", data)
    d = downloader(models)
    fetch(d, server, "model.bin")
    sent, heads = server.sent_bytes("/model.bin"), len(server.requests_for("/model.bin", "HEAD"))

    reports: list[DownloadProgress] = []
    by_size = fetch(d, server, "model.bin", progress=reports.append)  # no sha256: the server's size (HEAD)
    by_digest = fetch(d, server, "model.bin", sha256=sha(data))  # a sha256: no request at all
    for result in (by_size, by_digest):
        assert result.reused and result.fetched_bytes == 0 and result.path == models / "m1" / "model.bin"
    assert by_size.sha256 is None and by_digest.sha256 == sha(data)
    assert reports == [DownloadProgress(len(data), len(data), 100.0)]
    assert server.sent_bytes("/model.bin") == sent
    assert len(server.requests_for("/model.bin", "HEAD")) == heads + 1

    # The server's file changed size: downloaded again, over the old one.
    server.put("model.bin", payload(MiB // 2, seed=12))
    changed = fetch(d, server, "model.bin")
    assert not changed.reused and changed.size == MiB // 2


def test_local_sources_are_verified_where_they_are(tmp_path: Path, models: Path) -> None:
    folder = tmp_path / "local models"
    folder.mkdir()
    data = payload(300 * KiB, seed=13)
    (folder / "w.bin").write_bytes(data)
    d = downloader(models)

    by_path = asyncio.run(d.fetch(model_id="m1", repository=str(folder), file_name="w.bin", sha256=sha(data)))
    file_url = (folder / "w.bin").as_uri()
    by_url = asyncio.run(d.fetch(model_id="m1", repository=file_url, file_name="", sha256=sha(data).upper()))
    for result in (by_path, by_url):
        assert result.path == folder / "w.bin" and result.reused and result.fetched_bytes == 0
        assert result.size == len(data) and result.sha256 == sha(data)

    missing = fetch_error(d.fetch(model_id="m1", repository=str(folder), file_name="nope.bin"))
    wrong = fetch_error(d.fetch(model_id="m1", repository=file_url, file_name="", sha256="1" * 64))
    escaping = fetch_error(d.fetch(model_id="m1", repository=str(folder), file_name="../local models/w.bin"))
    assert (missing.code, wrong.code, escaping.code) == ("NOT_FOUND", "SHA256_MISMATCH", "INVALID_SOURCE")
    assert (folder / "w.bin").read_bytes() == data  # the operator's file is never touched
    assert not models.exists()  # nothing copied


def test_two_fetches_of_one_model_download_it_once(server: RangeServer, models: Path) -> None:
    data = payload(MiB, seed=14)
    server.put("model.bin", data)
    server.throttle = 4 * MiB
    d = downloader(models)

    async def both() -> list[DownloadResult]:
        return await asyncio.gather(
            *(d.fetch(model_id="m1", repository=server.url, file_name="model.bin") for _ in "ab")
        )

    first, second = asyncio.run(both())
    assert not first.reused and second.reused and first.path == second.path
    assert len(server.requests_for("/model.bin")) == 1 and server.sent_bytes("/model.bin") == len(data)
    assert first.path.read_bytes() == data


def test_a_lock_held_by_a_live_process_is_waited_for(
    server: RangeServer, models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = payload(256 * KiB, seed=15)
    server.put("model.bin", data)
    d = downloader(models)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = d.target_path("m1", "model.bin").with_name("model.bin.lock")
        lock.parent.mkdir(parents=True)
        held = {
            "pid": holder.pid,
            "owner": "another agent",
            "host": socket.gethostname(),
            "startedAt": "2025-01-01T00:00:00+00:00",
            "processStartedAt": psutil.Process(holder.pid).create_time(),
        }
        lock.write_text(json.dumps(held))

        async def cancelled_while_waiting() -> DownloadError:
            cancel = asyncio.Event()
            task = asyncio.ensure_future(
                d.fetch(model_id="m1", repository=server.url, file_name="model.bin", cancel=cancel)
            )
            await asyncio.sleep(0.3)  # several polls of the lock: none may go ahead while its owner lives
            assert not task.done() and server.requests == []
            cancel.set()
            with pytest.raises(DownloadError) as caught:
                await task
            return caught.value

        assert asyncio.run(cancelled_while_waiting()).code == "CANCELLED"
        assert json.loads(lock.read_text()) == held  # still the other owner's
    finally:
        holder.kill()
        holder.wait()

    with caplog.at_level(logging.WARNING, logger="aiwm_node.download"):
        result = fetch(d, server, "model.bin")
    assert result.path.read_bytes() == data and not lock.exists()
    assert f"its owner, pid {holder.pid}, has exited" in caplog.text


def test_a_lock_of_an_earlier_process_with_our_pid_is_taken_over(server: RangeServer, models: Path) -> None:
    """A container's agent often has the same pid at every start: its own pid in a lock it does not hold is stale."""
    server.put("model.bin", payload(64 * KiB))
    d = downloader(models)
    lock = d.target_path("m1", "model.bin").with_name("model.bin.lock")
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": os.getpid(), "owner": "test", "host": socket.gethostname()}))
    assert not fetch(d, server, "model.bin").reused and not lock.exists()


def test_max_parallel_one_downloads_one_model_at_a_time(server: RangeServer, models: Path) -> None:
    for name in ("a.bin", "b.bin"):
        server.put(name, payload(512 * KiB, seed=len(name)))
    server.throttle = 2 * MiB  # each body takes a quarter of a second: unlimited, they would overlap
    d = downloader(models, max_parallel=1)

    async def both() -> list[DownloadResult]:
        return await asyncio.gather(
            *(d.fetch(model_id=name, repository=server.url, file_name=name) for name in ("a.bin", "b.bin"))
        )

    results = asyncio.run(both())
    assert server.max_active == 1 and all(r.size == 512 * KiB for r in results)


def test_max_parallel_two_downloads_two_models_at_once(server: RangeServer, models: Path) -> None:
    for name in ("a.bin", "b.bin"):
        server.put(name, payload(256 * KiB))
    server.gate = threading.Event()  # both bodies are held until both requests are in flight
    d = downloader(models, max_parallel=2)

    async def both() -> list[DownloadResult]:
        tasks = [
            asyncio.ensure_future(d.fetch(model_id=name, repository=server.url, file_name=name))
            for name in ("a.bin", "b.bin")
        ]
        await async_wait_until(lambda: server.active == 2, "two downloads at once")
        assert server.gate is not None
        server.gate.set()
        return await asyncio.gather(*tasks)

    assert [r.size for r in asyncio.run(both())] == [256 * KiB, 256 * KiB]


@pytest.mark.parametrize(
    ("status", "code"), [(404, "NOT_FOUND"), (401, "UNAUTHORIZED"), (403, "UNAUTHORIZED"), (500, "HTTP_ERROR")]
)
def test_server_refusals(server: RangeServer, models: Path, status: int, code: str) -> None:
    server.statuses["/model.bin"] = status
    d = downloader(models)
    error = fetch_error(d.fetch(model_id="m1", repository=server.url, file_name="model.bin"))
    assert error.code == code and str(status) in error.message
    assert listing(models / "m1") == []


def test_an_unreachable_server_is_a_network_error(models: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed when the block ends: nothing listens there
    d = downloader(models)
    error = fetch_error(d.fetch(model_id="m1", repository=f"http://127.0.0.1:{port}", file_name="model.bin"))
    assert error.code == "NETWORK_ERROR"


def test_the_command_line_reports_errors_as_json(tmp_path: Path) -> None:
    arguments = ["--models-dir", str(tmp_path), "--model-id", "m1", "--repository", "https://x.test/m"]
    done = subprocess.run(
        [sys.executable, "-m", "aiwm_node.download", *arguments, "--file-name", "../escape"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["code"] == "INVALID_SOURCE"


# The HTTP underneath (aiwm_node.fetch): what it took over from httpx.


class _Relay(threading.Thread):
    """A plain-HTTP forwarding proxy (absolute-URL GETs relayed to their server), recording what it relayed."""

    def __init__(self) -> None:
        import http.client
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        relayed: list[str] = []
        self.relayed = relayed

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                relayed.append(self.path)
                parts = urlsplit(self.path)
                upstream = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=10)
                headers = {k: v for k, v in self.headers.items() if not k.lower().startswith("proxy-")}
                upstream.request("GET", parts.path, headers=headers)
                answer = upstream.getresponse()
                body = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                upstream.close()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        super().__init__(target=self.httpd.serve_forever, daemon=True)


def test_the_environments_http_proxy_is_used_unless_no_proxy_names_the_host(
    server: RangeServer, models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(300 * KiB, seed=21)
    server.put("model.bin", data)
    relay = _Relay()
    relay.start()
    try:
        for name in ("http_proxy", "no_proxy", "HTTP_PROXY", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("http_proxy", relay.url)
        assert fetch(downloader(models), server, "model.bin").path.read_bytes() == data
        assert relay.relayed == [f"{server.url}/model.bin"]  # the absolute URL, as a proxy is asked

        monkeypatch.setenv("no_proxy", "127.0.0.1")
        assert fetch(downloader(models), server, "model.bin", model_id="m2").path.read_bytes() == data
        assert relay.relayed == [f"{server.url}/model.bin"]  # straight to the server this time
    finally:
        relay.httpd.shutdown()
        relay.httpd.server_close()


def test_cancel_ends_a_download_whose_connection_has_stalled(server: RangeServer, models: Path) -> None:
    server.put("model.bin", payload(MiB, seed=22))
    server.gate = threading.Event()  # the answer's headers are sent, its body is held
    d = downloader(models)

    async def scenario() -> tuple[DownloadError, float]:
        cancel = asyncio.Event()
        task = asyncio.ensure_future(
            d.fetch(model_id="m1", repository=server.url, file_name="model.bin", cancel=cancel)
        )
        await async_wait_until(lambda: server.active == 1, "a body being sent")
        await asyncio.sleep(0.3)  # the reading thread is blocked on the connection by now
        cancel.set()
        cancelled_at = time.monotonic()
        with pytest.raises(DownloadError) as caught:
            await asyncio.wait_for(task, WAIT_SECONDS)
        return caught.value, time.monotonic() - cancelled_at

    try:
        error, took = asyncio.run(scenario())
    finally:
        server.gate.set()
    assert error.code == "CANCELLED" and took < 5  # the blocked read was woken, not left to its 60 s timeout
    assert "model.bin.lock" not in listing(models / "m1")


def test_a_body_compressed_though_identity_was_asked_is_stored_decoded(tmp_path: Path, models: Path) -> None:
    import gzip
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    data = payload(200 * KiB, seed=23) + bytes(200 * KiB)  # half of it compresses well
    packed = gzip.compress(data)

    class Gzipping(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(packed)))
            self.end_headers()
            self.wfile.write(packed)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Gzipping)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        call = downloader(models).fetch(
            model_id="m1", repository=f"http://127.0.0.1:{httpd.server_address[1]}", file_name="model.bin"
        )
        result = asyncio.run(asyncio.wait_for(call, WAIT_SECONDS))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result.path.read_bytes() == data and result.size == len(data) and result.sha256 == sha(data)
    assert listing(models / "m1") == ["model.bin"]  # no sidecar: a compressed answer is not resumed
