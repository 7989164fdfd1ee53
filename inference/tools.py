"""`api` tools run by AIWM for an agent: an HTTP POST of the model's arguments to the tool's endpoint.

The model chooses the arguments, and whoever can edit a tool chooses its endpoint: both are
untrusted. So the request goes only to hosts `AIWM_TOOL_ALLOWED_HOSTS` allows, and every address
it connects to is checked (the resolver below refuses, so a name that resolves to a loopback or
metadata address on the second lookup is refused too); redirects are not followed; the answer is
bounded in time and size.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Cloud metadata services (AWS/GCP/Azure/OpenStack on 169.254.169.254, AWS's IPv6 one).
METADATA = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254"))


class ToolRefused(Exception):
    """The call was not made: the endpoint is not a URL this service may call."""


@dataclass(frozen=True)
class Allowed:
    """AIWM_TOOL_ALLOWED_HOSTS, parsed."""

    names: frozenset[str]
    suffixes: tuple[str, ...]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    any_public: bool

    @classmethod
    def parse(cls, entries: list[str]) -> Allowed:
        names, suffixes, networks, any_public = set(), [], [], False
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                any_public = True
            elif entry.startswith("*."):
                suffixes.append(entry[1:])
            else:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    names.add(entry.rstrip("."))
        return cls(frozenset(names), tuple(suffixes), tuple(networks), any_public)

    def names_host(self, host: str) -> bool:
        """Whether an entry names this host (by name or pattern), not only "any public address"."""
        return host in self.names or host.endswith(self.suffixes)

    def admits(self, host: str, address: IPAddress) -> bool:
        if any(address in network for network in self.networks):
            return True
        if is_special(address):
            # Loopback, private, link-local...: only where an entry names the host itself.
            return address not in METADATA and self.names_host(host)
        return self.any_public or self.names_host(host)


def is_special(address: IPAddress) -> bool:
    """Not an address of the public internet: what a request forged by a model must not reach."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_special(address.ipv4_mapped)
    return not address.is_global or address in METADATA


class GuardedResolver(AbstractResolver):
    """Resolves as usual, then refuses the name unless every address it resolved to is admitted."""

    def __init__(self, allowed: Allowed) -> None:
        self.allowed = allowed
        self.inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        for result in results:
            address = ipaddress.ip_address(result["host"])
            if not self.allowed.admits(host.lower().rstrip("."), address):
                raise ToolRefused(f"{host} resolves to {address}, which AIWM_TOOL_ALLOWED_HOSTS does not allow")
        return results

    async def close(self) -> None:
        await self.inner.close()


def check_endpoint(endpoint: str, allowed: Allowed) -> None:
    """Refuse what is not an http(s) URL to an allowed host before anything is sent."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolRefused(f"endpoint {endpoint[:200]!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise ToolRefused("endpoint: credentials in the URL are not sent")
    host = parts.hostname.lower().rstrip(".")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:  # an IP literal is not resolved, so checked here
        if not allowed.admits(host, literal):
            raise ToolRefused(f"{host} is not an address AIWM_TOOL_ALLOWED_HOSTS allows")
    elif not (allowed.any_public or allowed.names_host(host)):
        raise ToolRefused(f"{host} is not a host AIWM_TOOL_ALLOWED_HOSTS allows")


@dataclass
class ToolOutcome:
    result: Any
    error: str
    latency: float  # milliseconds


async def call_api_tool(endpoint: str, arguments: dict[str, Any]) -> ToolOutcome:
    """POST the arguments as JSON; the result is the answer's JSON (or its text). Never raises: a
    refusal, a timeout, an error status or an oversized answer is the outcome's `error`."""
    started = time.monotonic()

    def outcome(result: Any = None, error: str = "") -> ToolOutcome:
        return ToolOutcome(result, error, (time.monotonic() - started) * 1000)

    allowed = Allowed.parse(settings.AIWM_TOOL_ALLOWED_HOSTS)
    limit = settings.AIWM_TOOL_MAX_RESPONSE_BYTES
    try:
        check_endpoint(endpoint, allowed)
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(allowed), use_dns_cache=False)
        timeout = aiohttp.ClientTimeout(total=settings.AIWM_TOOL_TIMEOUT_SECONDS)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.post(endpoint, json=arguments, allow_redirects=False) as response,
        ):
            chunks, size = [], 0
            async for chunk in response.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > limit:
                    return outcome(error=f"the tool answered more than {limit} bytes")
                chunks.append(chunk)
            text = b"".join(chunks).decode(errors="replace")
            if response.status >= 300:
                return outcome(error=f"the tool answered HTTP {response.status}: {text[:300]}")
            if response.content_type == "application/json" or text[:1] in ("{", "["):
                try:
                    return outcome(json.loads(text))
                except ValueError:
                    pass
            return outcome(text)
    except ToolRefused as exc:
        return outcome(error=f"refused: {exc}")
    except TimeoutError:
        return outcome(error=f"the tool did not answer within {settings.AIWM_TOOL_TIMEOUT_SECONDS:g} s")
    except aiohttp.ClientConnectorError as exc:
        return outcome(error=f"could not reach the tool: {exc}")
    except (aiohttp.ClientError, OSError) as exc:
        return outcome(error=f"the call failed: {type(exc).__name__}: {exc}")
