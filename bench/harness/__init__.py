"""What the benchmarks share, one copy each.

- `env`: the repository's path and the environment of a benchmark's service processes;
- `processes`: child processes (a logging child, a line-driven child), stopping them, clean-up;
- `servers`: an ASGI server process (daphne or uvicorn) on loopback;
- `databases`: PostgreSQL databases created, cloned, migrated and dropped, backends' CPU;
- `redis_db`: the run's Redis database (picked, claimed, flushed);
- `procfs`: CPU, threads, RSS and TCP connections of a process, from /proc;
- `stats`: percentiles and their formatting;
- `report`: the log, the machine and versions line;
- `fleet`: nodes seeded through the ORM, each with its node token;
- `messages`, `daemon`: the simulated daemons' messages and their Socket.IO client (and the line
  protocol a daemon process speaks with its benchmark);
- `apps`: an ASGI application loaded, then patched, on its first call (the instrumented variants);
- `smoke`: what `--smoke` shares: its defaults, the patch targets it resolves, its checks.
"""
