"""Writing the agent's small state files so that a crash leaves the old version or the new one,
never half of one."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, text: str, *, durable: bool = False) -> None:
    """Write `text` beside `path`, then rename it over `path`. `durable`: fsync it first, so the new
    version also survives a power loss (for what must not be lost: which process serves what)."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w") as handle:
        handle.write(text)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(temporary, path)
