"""README.md examples work as written: stock curl, the configured port, no files outside the repository."""

from __future__ import annotations

import re

from tests.support.environment import ROOT

README = (ROOT / "README.md").read_text()
GLOB_OFF = re.compile(r"(?:^|\s)(?:--globoff|-[A-Za-z]*g[A-Za-z]*)(?=\s|$)")
HARD_CODED_PORT = re.compile(r"(?:localhost|127\.0\.0\.1|0\.0\.0\.0):3003\b")


def shell_commands(text: str) -> list[str]:
    """Each command of the README's shell code blocks, backslash-continued lines joined."""
    commands: list[str] = []
    for block in re.findall(r"```(?:bash|sh|shell|console)?\n(.*?)```", text, flags=re.DOTALL):
        for command in re.sub(r"\\\n\s*", " ", block).splitlines():
            if command.strip():
                commands.append(command)
    return commands


def curl_invocations(text: str) -> list[str]:
    """Each curl call (up to a pipe), in code blocks and in inline code alike."""
    found = []
    for command in [*shell_commands(text), *re.findall(r"`([^`\n]*curl[^`\n]*)`", text)]:
        for part in re.split(r"(?:^|[\s($])curl\s", command)[1:]:
            found.append("curl " + re.split(r"\s\|\s", part)[0])
    return found


def test_the_readme_has_curl_examples() -> None:
    assert len(curl_invocations(README)) >= 3


def url_part(invocation: str) -> str:
    """The invocation without its request body and shell variables: what curl may read as a URL glob."""
    without_body = re.sub(r"\s(?:-d|--data(?:-raw|-binary)?|--json)\s+('[^']*'|\"[^\"]*\"|\S+)", " ", invocation)
    return re.sub(r"\$\{\w+\}", "", without_body)


def test_every_curl_with_brackets_turns_globbing_off() -> None:
    # Stock curl reads `filter[status]` (and `{a,b}`) in a URL as a glob and fails ("bad range in URL").
    offenders = [c for c in curl_invocations(README) if re.search(r"[\[\]{}]", url_part(c)) and not GLOB_OFF.search(c)]
    assert offenders == []


def test_curl_examples_use_the_configured_port() -> None:
    offenders = [c for c in curl_invocations(README) if HARD_CODED_PORT.search(c)]
    assert offenders == []
    assert "export AIWM_PORT=3003" in README


def test_no_pointer_outside_the_repository() -> None:
    assert "../" not in README


def test_the_checks_catch_what_they_are_for() -> None:
    bad = (
        '```bash\ncurl -s "localhost:3003/api/nodes?filter[a]=b" \\\n  -H x\n'
        "TOKEN=$(curl -s -X POST x -d '[1]' | jq \".[0]\")\n```\n"
    )
    invocations = curl_invocations(bad)
    assert len(invocations) == 2
    assert not GLOB_OFF.search(invocations[0]) and HARD_CODED_PORT.search(invocations[0])
    assert "[" not in url_part(invocations[1])  # neither the body nor the pipe's jq filter is curl's URL
    assert "{" not in url_part('curl "localhost:${AIWM_PORT}/api/nodes"')
    assert GLOB_OFF.search("curl -sg 'x[1]'") and GLOB_OFF.search("curl --globoff x")
    assert not GLOB_OFF.search("curl --get x")
