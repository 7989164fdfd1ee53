"""The run's Redis database: an empty one picked and claimed, flushed before each run and at the end.

The test suite uses databases 14 and 15 (and flushes them): a benchmark never picks those.
"""

from __future__ import annotations

REDIS_CLAIM = "aiwm-bench-claim"


def pick_redis_db(url: str, highest: int = 13) -> int:
    """The highest-numbered empty Redis database up to `highest`, claimed with a key so that another
    benchmark picking at the same time sees it in use."""
    import redis

    for db in range(highest, 0, -1):
        client = redis.Redis.from_url(f"{url}/{db}")
        try:
            if client.dbsize() == 0 and client.set(REDIS_CLAIM, "1", nx=True, ex=6 * 3600):
                return db
        finally:
            client.close()
    raise RuntimeError(f"no empty Redis database among 1..{highest}")


def run_redis_url(server: str, db: int | None) -> str:
    """The run's Redis database URL: `--redis-db` when given, else an empty one picked and claimed."""
    return f"{server}/{db if db is not None else pick_redis_db(server)}"


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def reset_redis(url: str) -> None:
    """Flush the run's Redis database and claim it again."""
    import redis

    flush_redis(url)
    client = redis.Redis.from_url(url)
    try:
        client.set(REDIS_CLAIM, "1", ex=6 * 3600)
    finally:
        client.close()


def redis_server_version(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return str(client.info("server").get("redis_version", "?"))
    except Exception:
        return "?"
    finally:
        client.close()
