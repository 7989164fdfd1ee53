"""What the benchmarks' `--smoke` mode shares.

A smoke run is the benchmark at tiny sizes: the real server processes, the real code paths and
every check, in seconds rather than minutes, without judging the figures (on a shared machine a
tiny run's figures mean nothing). It exists so that a change to the service which breaks a
benchmark (a renamed function it patches or calls, a changed message) fails a test
(tests/test_bench_smoke.py) instead of being found at the next measurement.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterable
from typing import Any

from bench.harness.report import log

Check = tuple[str, bool]  # what was checked (with what was found), and whether it held


def add_smoke_flag(parser: argparse.ArgumentParser, argv: list[str], defaults: dict[str, Any], sizes: str) -> None:
    """`--smoke`: `defaults` instead of the parser's (flags given on the command line still win)."""
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"a few seconds at tiny sizes ({sizes}): the real servers, code paths and checks; the figures are "
        "not judged, a failed check or a patch target the service no longer has exits 1",
    )
    if "--smoke" in argv:
        parser.set_defaults(**defaults)


def resolve(path: str) -> Any:
    """The object at a dotted path (`package.module.Class.attribute`): the longest importable
    module prefix, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            target = getattr(target, name)
        return target
    raise ModuleNotFoundError(path)


def require(paths: Iterable[str], why: str) -> None:
    """Fail loudly when the service no longer has one of `paths` (what `why` patches or calls)."""
    missing = []
    for path in paths:
        try:
            resolve(path)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{path} ({type(exc).__name__}: {exc})")
    if missing:
        raise RuntimeError(f"{why} needs what the service no longer has: " + "; ".join(missing))


def judge(checks: Iterable[Check], indent: str = "") -> bool:
    """Print each check as `check ok: ...` or `check FAILED: ...`; True when all held."""
    ok = True
    for text, held in checks:
        log(f"{indent}check {'ok' if held else 'FAILED'}: {text}")
        ok &= held
    return ok


def judge_goals(goals: Iterable[tuple[str, bool, str]], smoke: bool) -> bool:
    """Print each goal (`goal  <what> <bound>: met|MISSED`) unless this is a smoke run, whose
    figures are not judged; True when every goal was met (or none was judged)."""
    if smoke:
        log("goals not judged (--smoke: tiny sizes)")
        return True
    ok = True
    for text, met, bound in goals:
        ok &= met
        log(f"goal  {text} {bound}: {'met' if met else 'MISSED'}")
    return ok
