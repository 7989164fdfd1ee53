"""The direction of dependencies (docs/decisions.md "Layout"): gateway -> domain apps -> aiwm_project.

Checked on the source, so a new import against the grain fails here rather than in a review.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOMAIN_APPS = ("nodes", "models_registry", "agents", "deployments", "executions", "conversations")
APPS = (*DOMAIN_APPS, "gateway")
# The operator console's adapters (metrics, dashboard, live events stream) sit beside the gateway.
ADAPTER_APPS = ("gateway", "console")
# The base package's composition roots: they wire the apps together, so they may import them.
COMPOSITION_ROOTS = {"asgi.py", "urls.py", "celery.py", "background.py", "tasks.py"}
# `manage.py serve` composes the web process, and with --local-node this machine's node and agent.
COMPOSITION_ROOT_FILES = {ROOT / "aiwm_project" / "management" / "commands" / "serve.py"}
# The HTTP layer of an app: may use the shared API layer (aiwm_project.api).
ADAPTER_MODULES = {"views.py", "serializers.py", "urls.py", "admin.py"}


def _sources(package: str) -> Iterator[Path]:
    for path in sorted((ROOT / package).rglob("*.py")):
        if "migrations" not in path.parts:
            yield path


def _imported(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _offences(paths: Iterator[Path], forbidden: tuple[str, ...]) -> list[str]:
    """`path imports module` for every import of a forbidden package or module (or one inside it)."""
    return [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in paths
        for module in _imported(path)
        if any(module == name or module.startswith(f"{name}.") for name in forbidden)
    ]


def test_the_base_package_imports_no_app_outside_its_composition_roots() -> None:
    paths = (
        p
        for p in _sources("aiwm_project")
        if (p.name not in COMPOSITION_ROOTS or p.parent.name != "aiwm_project") and p not in COMPOSITION_ROOT_FILES
    )
    assert _offences(paths, (*APPS, "console")) == []


def test_the_node_agent_imports_nothing_of_the_server() -> None:
    """aiwm_node is installed on GPU servers by itself: no Django, no app, no project package."""
    server = ("django", "rest_framework", "channels", "aiwm_project", "console", *APPS)
    assert _offences(_sources("aiwm_node"), server) == []


@pytest.mark.parametrize("app", DOMAIN_APPS)
def test_a_domain_app_does_not_import_the_gateway_or_the_console(app: str) -> None:
    assert _offences(_sources(app), ADAPTER_APPS) == []


@pytest.mark.parametrize("app", APPS)
def test_domain_modules_do_not_import_the_api_layer(app: str) -> None:
    paths = (p for p in _sources(app) if p.name not in ADAPTER_MODULES and "management" not in p.parts)
    assert _offences(paths, ("aiwm_project.api",)) == []
