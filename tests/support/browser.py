"""Debian's chromium, headless, for the browser tests: found (or the test skips, visibly; under
CI=true it fails), and run with the flags this closed network needs (no background networking,
a fresh profile) to print a page's DOM once its JavaScript has run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.environment import IN_CI

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    """The browser's path; skips the test (fails it under CI=true) when it is not installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if IN_CI:
            pytest.fail("CI=true but chromium is not installed (make test installs it as root)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return browser


def dump_dom(url: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """Load `url` in a fresh profile, let its scripts run (15 s of virtual time), print the DOM."""
    return subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
