"""Where the repository is, and whether this is a CI run (where a missing tool fails instead of skipping)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() == "true"
