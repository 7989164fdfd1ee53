"""The operator's pages timed: the admin login (the form, its CSRF token, the session cookie), then
the dashboard and the nodes changelist of every fleet requested in turn by ONE client, one request
at a time on one kept-alive connection per fleet, each timed from sending the request to the last
byte of the page."""

from __future__ import annotations

import http.client
import json
import re
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from bench.harness.servers import HOST, Server
from bench.harness.smoke import Check

DASHBOARD, CHANGELIST = "/admin/", "/admin/nodes/node/"
PAGES = (DASHBOARD, CHANGELIST)
TIMEOUT_S = 60.0
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def _cookies(response: http.client.HTTPResponse) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_all("Set-Cookie") or []:
        jar.load(header)
    return {name: morsel.value for name, morsel in jar.items()}


def admin_login(server: Server, username: str, password: str) -> str:
    """The admin's `sessionid` after logging in through its form (GET it for the CSRF cookie and
    token, POST it with `next=/admin/`)."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=TIMEOUT_S)
    try:
        conn.request("GET", "/admin/login/?next=/admin/")
        response = conn.getresponse()
        page = response.read().decode(errors="replace")
        csrf = _cookies(response).get("csrftoken", "")
        found = CSRF_INPUT.search(page)
        if response.status != 200 or not csrf or found is None:
            raise RuntimeError(f"GET /admin/login/: HTTP {response.status}, no CSRF cookie or token")
        body = urlencode(
            {"username": username, "password": password, "csrfmiddlewaretoken": found.group(1), "next": "/admin/"}
        )
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={csrf}",
            "Referer": f"{server.url}/admin/login/",
        }
        conn.request("POST", "/admin/login/?next=/admin/", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        session = _cookies(response).get("sessionid", "")
        if response.status != 302 or not session:
            raise RuntimeError(
                f"POST /admin/login/: HTTP {response.status}, sessionid {'set' if session else 'not set'}"
            )
        return session
    finally:
        conn.close()


def api_login(server: Server, username: str, password: str) -> str:
    """`POST /auth/login`: the operator's accessToken (its organization's: what the SSE subscribers send)."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=TIMEOUT_S)
    try:
        body = json.dumps({"username": username, "password": password})
        conn.request("POST", "/auth/login", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST /auth/login: HTTP {response.status}: {answer[:200]!r}")
        return str(json.loads(answer)["accessToken"])
    finally:
        conn.close()


@dataclass
class PageTimes:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {page: [] for page in PAGES})
    errors: dict[str, dict[str, int]] = field(default_factory=lambda: {page: {} for page in PAGES})
    sizes: dict[str, int] = field(default_factory=dict)  # bytes of the last page answered
    checks: list[Check] = field(default_factory=list)


class PageClient:
    """One logged-in client on one kept-alive connection (reopened after an error)."""

    def __init__(self, server: Server, session: str):
        self.server, self.headers = server, {"Cookie": f"sessionid={session}", "Accept": "text/html"}
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str) -> tuple[float, int, bytes]:
        """(seconds, status, body) of one GET; status -1 on a client error (the body: its name)."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection(HOST, self.server.port, timeout=TIMEOUT_S)
        t0 = time.perf_counter()
        try:
            self.conn.request("GET", path, headers=self.headers)
            response = self.conn.getresponse()
            body = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return time.perf_counter() - t0, -1, type(exc).__name__.encode()
        elapsed = time.perf_counter() - t0
        if response.will_close:
            self.close()
        return elapsed, status, body

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def time_pages(targets: dict[int, tuple[Server, str]], warmup: int, requests: int) -> dict[int, PageTimes]:
    """`warmup` then `requests` rounds over every fleet's service (by node count: the server and its
    admin session): a round asks each fleet for the dashboard and the changelist before the next
    round starts. The fleets are timed interleaved, not one after another, so that the machine's
    drift during a run (2x within a day here, BENCHMARKS.md) slows or speeds every fleet alike and
    the ratios stay the fleets'. Checks that both pages answered 200 and show the fleet (the
    changelist's count of nodes)."""
    out = {nodes: PageTimes() for nodes in targets}
    clients = {nodes: PageClient(server, session) for nodes, (server, session) in targets.items()}
    try:
        for _ in range(warmup):
            for client in clients.values():
                for page in PAGES:
                    client.get(page)
        for _ in range(requests):
            for nodes, client in clients.items():
                for page in PAGES:
                    elapsed, status, body = client.get(page)
                    if status == 200:
                        out[nodes].latencies[page].append(elapsed)
                        out[nodes].sizes[page] = len(body)
                    else:
                        kind = f"HTTP {status}" if status > 0 else body.decode()
                        out[nodes].errors[page][kind] = out[nodes].errors[page].get(kind, 0) + 1
        for nodes, client in clients.items():
            _check_pages(client, nodes, requests, out[nodes])
    finally:
        for client in clients.values():
            client.close()
    return out


def _check_pages(client: PageClient, nodes: int, requests: int, out: PageTimes) -> None:
    _, status, body = client.get(CHANGELIST)
    text = body.decode(errors="replace")
    shown = f"{nodes} node" in text.replace(",", "")  # the paginator's "1000 nodes" / "1,000 nodes"
    out.checks.append((f"{CHANGELIST}: HTTP {status}, counts {nodes} node(s)", status == 200 and shown))
    _, status, body = client.get(DASHBOARD)
    text = body.decode(errors="replace")
    out.checks.append((f"{DASHBOARD}: HTTP {status}, the fleet dashboard", status == 200 and "portal-0" in text))
    for page in PAGES:
        answered, errors = len(out.latencies[page]), out.errors[page]
        out.checks.append(
            (f"{page}: {answered}/{requests} answered 200, others {errors or 'none'}", answered == requests)
        )
