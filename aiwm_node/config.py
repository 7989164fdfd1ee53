"""The agent's settings: command-line flags over environment variables over a config file
(`--config FILE`, else `<data dir>/config.toml`), and its identity on disk."""

from __future__ import annotations

import os
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiwm_node.files import write_atomically

ENV = {
    "server": "AIWM_NODE_SERVER",
    "token": "AIWM_NODE_TOKEN",
    "node_id": "AIWM_NODE_ID",
    "data_dir": "AIWM_NODE_DATA_DIR",
    "advertise_host": "AIWM_NODE_ADVERTISE_HOST",
    "log_level": "AIWM_NODE_LOG_LEVEL",
}


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/aiwm-node")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "aiwm-node"


@dataclass
class Config:
    server: str = ""  # the control plane's base URL, http(s)://HOST:PORT
    token: str = field(default="", repr=False)  # a node token (or a user token with node_id)
    node_id: str = ""
    data_dir: Path = field(default_factory=default_data_dir)
    # The address the control plane reaches this machine's model servers at (endpoints it is
    # given); by default the address this machine uses to reach the control plane.
    advertise_host: str = ""
    log_level: str = "INFO"
    # Backoff between connection attempts: min(cap, base * 2**n), with jitter.
    reconnect_base_seconds: float = 1.0
    reconnect_cap_seconds: float = 60.0
    max_parallel_downloads: int = 2

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def store_path(self) -> Path:
        return self.data_dir / "agent.sqlite3"


def load(flags: dict[str, Any], environ: dict[str, str] | None = None) -> Config:
    """Flags (None: not given) over the environment over the config file; missing ones defaulted."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    data_dir = flags.get("data_dir") or environ.get(ENV["data_dir"])
    config_file = Path(flags["config"]) if flags.get("config") else None
    if config_file is None:
        candidate = Path(data_dir or default_data_dir()) / "config.toml"
        config_file = candidate if candidate.exists() else None
    if config_file is not None:
        with config_file.open("rb") as handle:
            values.update({key.replace("-", "_"): value for key, value in tomllib.load(handle).items()})
    for name, variable in ENV.items():
        if environ.get(variable):
            values[name] = environ[variable]
    for name in (*ENV, "reconnect_base_seconds", "reconnect_cap_seconds", "max_parallel_downloads"):
        if flags.get(name) is not None:
            values[name] = flags[name]
    known = set(Config.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(unknown)}")
    if "data_dir" in values:
        values["data_dir"] = Path(values["data_dir"]).expanduser()
    config = Config(**values)
    config.server = config.server.rstrip("/")
    return config


def agent_id(data_dir: Path) -> str:
    """The agent's stable id: made once, kept in the data dir (written atomically)."""
    path = data_dir / "agent-id"
    try:
        existing = path.read_text().strip()
        if existing:
            return existing
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    new = uuid.uuid4().hex
    write_atomically(path, new + "\n")
    return new
