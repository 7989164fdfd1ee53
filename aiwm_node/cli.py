"""`aiwm-node run` (the daemon) and `aiwm-node status`; also `python -m aiwm_node`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from aiwm_node import PROTOCOL_VERSION, __version__
from aiwm_node.config import ENV, Config, default_data_dir, load


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiwm-node", description="AIWM's node agent")
    parser.add_argument("--version", action="version", version=f"aiwm-node {__version__} (protocol {PROTOCOL_VERSION})")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="connect this machine to AIWM and serve its commands")
    run.add_argument("--server", help=f"the control plane's URL, http(s)://HOST:PORT (${ENV['server']})")
    run.add_argument("--token", help=f"the node token (${ENV['token']}; prefer the environment or the config file)")
    run.add_argument("--node-id", dest="node_id", help=f"the node's id, with a user token (${ENV['node_id']})")
    run.add_argument("--advertise-host", dest="advertise_host", help="address the control plane reaches this node at")
    run.add_argument("--log-level", dest="log_level", help="DEBUG, INFO, WARNING")
    for sub in (run, commands.add_parser("status", help="what the agent in this data dir is doing")):
        sub.add_argument("--data-dir", dest="data_dir", help=f"where the agent keeps its state (${ENV['data_dir']})")
        sub.add_argument("--config", help="a TOML file of settings (default: <data dir>/config.toml)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    flags = {key: value for key, value in vars(args).items() if key != "command"}
    try:
        config = load(flags)
    except (ValueError, OSError) as exc:
        print(f"aiwm-node: {exc}", file=sys.stderr)
        return 2
    if args.command == "status":
        print(json.dumps(status(config), indent=2))
        return 0
    return run(config)


def run(config: Config) -> int:
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per probe of each model server otherwise
    if not config.server or not config.token:
        print("aiwm-node: --server and --token (or their environment variables) are required", file=sys.stderr)
        return 2
    config.data_dir.mkdir(parents=True, exist_ok=True)
    lock = _hold_instance_lock(config.data_dir)
    if lock is None:
        print(f"aiwm-node: another agent is running on {config.data_dir}", file=sys.stderr)
        return 1
    from aiwm_node.agent import Agent

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await Agent(config).run(stop)

    asyncio.run(main())
    return 0


def _hold_instance_lock(data_dir: Path) -> Any:
    """One agent per data dir (two would both think they own its model servers): an exclusive
    lock on `agent.pid`, held until the process ends — released by the kernel even after SIGKILL."""
    handle = (data_dir / "agent.pid").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def status(config: Config) -> dict[str, Any]:
    """Read from the data dir, without disturbing a running agent."""
    from aiwm_node.store import Store

    data_dir = config.data_dir
    out: dict[str, Any] = {"dataDir": str(data_dir), "version": __version__, "running": False}
    if not data_dir.exists():
        out["note"] = f"no agent has run with this data dir (default {default_data_dir()})"
        return out
    pid_file = data_dir / "agent.pid"
    if pid_file.exists():
        with pid_file.open() as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(handle, fcntl.LOCK_UN)
            except BlockingIOError:
                out["running"] = True
                out["pid"] = int(handle.read().strip() or 0)
    with contextlib.suppress(FileNotFoundError):
        out["agentId"] = (data_dir / "agent-id").read_text().strip()
    with contextlib.suppress(FileNotFoundError, ValueError):
        out["session"] = json.loads((data_dir / "session.json").read_text())
    with contextlib.suppress(FileNotFoundError, ValueError):
        servers = json.loads((data_dir / "deployments.json").read_text())
        out["deployments"] = [
            {
                "deploymentId": server["deployment_id"],
                "status": server["status"],
                "pid": server["pid"],
                "endpoint": server["endpoint"],
                "restarts": server["restarts"],
                "alive": bool(server["pid"]) and _alive(server["pid"]),
            }
            for server in servers.values()
        ]
    if config.store_path.exists():
        store = Store(config.store_path)
        try:
            out["outbox"] = store.outbox_depth()
            out["commands"] = store.command_counts()
        finally:
            store.close()
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True
