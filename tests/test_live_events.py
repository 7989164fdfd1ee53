"""`GET /api/events`: the live events browsers follow, over real HTTP streams.

In one process (the live gateway): an organization hears its nodes, heartbeats, executions and
commands as a python-socketio daemon and the REST API cause them, and another organization hears
nothing; a dropped stream resumes from `Last-Event-ID`; who may listen (bearer, single-use ticket,
admin session); the keep-alive comment; a closed stream is unsubscribed. Across processes (the
PostgreSQL pass, with Redis): an event caused on one web process reaches a subscriber of another,
which also resumes from an id the first one gave.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from aiwm_project.auth import issue_user_token
from aiwm_project.live_events import hub
from console.models import EventTicket
from tests.support.daemons import daemon_for, message
from tests.support.factories import AIModelFactory, NodeFactory
from tests.support.live_server import LiveGateway, Rest, eventually, free_port
from tests.support.personas import ORG_A, ORG_B, OWNER_B, OWNER_B_USER_ID, VIEWER_A_USER_ID
from tests.support.processes import Processes, user_token
from tests.support.sse import SseEvent, open_stream

NODE = "node-gpu-01"


def bearer(rest: Rest) -> dict[str, str]:
    return {"Authorization": str(rest.session.headers["Authorization"])}


def put(rest: Rest, path: str, body: dict[str, Any]) -> None:
    response = rest.session.put(rest.base + path, json=body, timeout=10)
    assert response.status_code == 200, response.text


async def aput(rest: Rest, path: str, body: dict[str, Any]) -> None:
    await sync_to_async(put, thread_sensitive=False)(rest, path, body)


def is_node_status(field: str, value: Any) -> Any:
    return lambda e: e.type == "node.status" and e.data.get(field) == value


@pytest.mark.django_db(transaction=True)
def test_an_organization_hears_its_fleet_and_another_hears_nothing(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token(node_id=NODE)
    AIModelFactory.create(model_id="tiny-v1", name="Tiny", node_id=NODE)
    rest_a, rest_b = Rest(gateway), Rest(gateway, org_id=ORG_B, user_id=OWNER_B_USER_ID)
    url = f"{gateway.url}/api/events"

    async def scenario() -> list[SseEvent]:
        async with aiohttp.ClientSession() as session:
            a = await open_stream(session, url, headers=bearer(rest_a))
            b = await open_stream(session, url, headers=bearer(rest_b))
            seen: list[SseEvent] = []
            async with daemon_for(gateway, {"token": token}) as daemon:
                seen.append(await a.until(is_node_status("websocketConnected", True)))
                await daemon.register(gpuDevices=[{"deviceId": "GPU-0", "model": "RTX 4090", "memoryTotal": 24576}])
                seen.append(await a.until(is_node_status("status", "online")))
                gpu = {"deviceId": "GPU-0", "utilization": 81, "memoryUsed": 18000, "temperature": 72}
                await daemon.send(message("telemetry.heartbeat", {"gpuStatus": [gpu]}))
                seen.append(await a.until(lambda e: e.type == "node.heartbeat"))
                body = await rest_a.apost("/api/models/tiny-v1/download", {}, expect=200)
                seen += await a.each(
                    lambda e: e.type == "execution.progress" and e.data["status"] == "running",
                    lambda e: e.type == "command.status" and e.data["status"] == "sent",
                )
                command = await daemon.expect("model.download")
                answer = {"originalMessageId": command["messageId"], "status": "success", "progress": 100}
                await daemon.send(message("command.result", answer, metadata=command["metadata"]))
                seen += await a.each(
                    lambda e: e.type == "command.status" and e.data["status"] == "succeeded",
                    lambda e: e.type == "execution.progress" and e.data["status"] == "completed",
                )
                assert seen[3].data["executionId"] == body["executionId"]
            seen.append(await a.until(is_node_status("websocketConnected", False)))
            await b.nothing_for(0.5)  # org B: not one of org A's events
            return seen

    connected, online, beat, running, sent, succeeded, completed, gone = async_to_sync(scenario)()
    for event in (connected, online, beat, gone):
        assert event.data["_id"] == node.pk and event.data["nodeId"] == NODE and event.data["orgId"] == ORG_A
        assert "connectionId" not in event.data and "tokenId" not in event.data  # never a session or token id
    assert beat.data["gpuDevices"][0]["utilization"] == 81 and beat.data["lastHeartbeat"].endswith("Z")
    assert running.data["steps"][0]["status"] == "running" and running.data["progress"] == 0
    assert sent.data["type"] == "model.download" and sent.data["executionId"] == running.data["executionId"]
    assert succeeded.data["messageId"] == sent.data["messageId"] and completed.data["progress"] == 100
    ids = [e.id for e in (connected, online, beat, running, sent, succeeded, completed, gone)]
    assert len(set(ids)) == len(ids)


@pytest.mark.django_db(transaction=True)
def test_a_dropped_stream_resumes_from_last_event_id_and_an_unknown_id_gets_reset(gateway: LiveGateway) -> None:
    node = NodeFactory.create(node_id=NODE)
    rest = Rest(gateway)
    url = f"{gateway.url}/api/events"

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            first = await open_stream(session, url, headers=bearer(rest))
            await aput(rest, f"/api/nodes/{node.pk}", {"status": "maintenance"})
            drained = await first.until(is_node_status("status", "maintenance"))
            first.response.close()  # dropped
            for status in ("online", "maintenance", "offline"):
                await aput(rest, f"/api/nodes/{node.pk}", {"status": status})
            again = await open_stream(session, url, headers={**bearer(rest), "Last-Event-ID": drained.id})
            missed = [await again.next() for _ in range(3)]
            assert [e.data["status"] for e in missed] == ["online", "maintenance", "offline"]
            await again.nothing_for(0.3)  # nothing twice
            # The query form (a first connect that resumes), and an id this server never gave.
            by_query = await open_stream(session, f"{url}?lastEventId={missed[0].id}", headers=bearer(rest))
            assert [(await by_query.next()).data["status"] for _ in range(2)] == ["maintenance", "offline"]
            lost = await open_stream(session, url, headers={**bearer(rest), "Last-Event-ID": "0badc0de:12"})
            reset = await lost.next()
            assert reset.type == "reset"
            await aput(rest, f"/api/nodes/{node.pk}", {"status": "online"})
            assert (await lost.until(lambda e: e.type == "node.status")).data["status"] == "online"  # then live

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_who_may_listen_bearer_single_use_ticket_or_admin_session(gateway: LiveGateway, settings: Any) -> None:
    url = f"{gateway.url}/api/events"
    viewer = Rest(gateway, role="organization.viewer", user_id=VIEWER_A_USER_ID)
    nobody = issue_user_token(user_id="u-x", username="x", org_id=ORG_A, roles=["no.such.role"])
    admin = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-ops-123")
    browser = Client()
    browser.force_login(admin)
    session_cookie = f"sessionid={browser.cookies['sessionid'].value}"
    node_a = NodeFactory.create(node_id="node-a")
    node_b = NodeFactory.create(node_id="node-b", actor=OWNER_B)
    owner_a, owner_b = Rest(gateway), Rest(gateway, org_id=ORG_B, user_id=OWNER_B_USER_ID)

    ticket = viewer.post("/api/events/ticket", {}, expect=201)
    assert set(ticket) == {"ticket", "expiresAt"} and ticket["expiresAt"].endswith("Z")
    assert EventTicket.objects.get().digest == hashlib.sha256(ticket["ticket"].encode()).hexdigest()  # hashed
    stale = viewer.post("/api/events/ticket", {}, expect=201)["ticket"]
    digest = hashlib.sha256(stale.encode()).hexdigest()
    EventTicket.objects.filter(digest=digest).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert requests.post(f"{gateway.url}/api/events/ticket", timeout=10).status_code == 401

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            for headers, query in (
                ({}, ""),
                ({"Authorization": "Bearer not-a-jwt"}, ""),
                ({"Authorization": "Basic abc"}, ""),
                ({"Authorization": f"Bearer {nobody}"}, ""),
                ({}, "?ticket=made-up"),
                ({}, f"?ticket={stale}"),  # expired
            ):
                refused = await open_stream(session, url + query, headers=headers, expect=401)
                body = await refused.response.json()
                assert body["statusCode"] == 401 and body["message"], body
            by_ticket = await open_stream(session, f"{url}?ticket={ticket['ticket']}")
            used = await open_stream(session, f"{url}?ticket={ticket['ticket']}", expect=401)  # single use
            assert "used" in (await used.response.json())["message"]
            by_admin = await open_stream(session, url, headers={"Cookie": session_cookie})
            for rest, node in ((owner_a, node_a), (owner_b, node_b)):
                await aput(rest, f"/api/nodes/{node.pk}", {"status": "maintenance"})
            assert (await by_ticket.until(lambda e: e.type == "node.status")).data["nodeId"] == "node-a"
            await by_ticket.nothing_for(0.3)  # org A's ticket: not org B's node
            heard = {(await by_admin.until(lambda e: e.type == "node.status")).data["orgId"] for _ in range(2)}
            assert heard == {ORG_A, ORG_B}  # the admin's session: every organization

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_an_idle_stream_gets_keep_alive_comments_and_a_closed_one_is_forgotten(
    gateway: LiveGateway, settings: Any
) -> None:
    settings.AIWM_EVENTS_KEEPALIVE_SECONDS = 0.2
    rest = Rest(gateway)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            before = len(hub._subscribers)
            stream = await open_stream(session, f"{gateway.url}/api/events", headers=bearer(rest))
            await stream.nothing_for(0.7)
            assert stream.comments.count("keep-alive") >= 2
            assert len(hub._subscribers) == before + 1
            stream.response.close()
            await asyncio.sleep(0)
        # The server noticed the client leave and dropped its subscription.
        await sync_to_async(eventually)(lambda: len(hub._subscribers) == before)

    async_to_sync(scenario)()


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_an_event_made_on_one_web_process_reaches_a_subscriber_of_another(processes: Processes, tmp_path: Path) -> None:
    node = NodeFactory.create(node_id="node-redis-events")
    port_a, port_b = free_port(), free_port()
    processes.start("web-A", "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port_a))
    processes.start("web-B", "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port_b))
    auth = {"Authorization": f"Bearer {user_token()}"}
    try:
        processes.wait_healthy("web-A", port_a)
        processes.wait_healthy("web-B", port_b)

        def change(status: str) -> None:
            response = requests.put(
                f"http://127.0.0.1:{port_a}/api/nodes/{node.pk}", json={"status": status}, headers=auth, timeout=10
            )
            assert response.status_code == 200, response.text

        async def scenario() -> None:
            async with aiohttp.ClientSession() as session:
                on_b = await open_stream(session, f"http://127.0.0.1:{port_b}/api/events", headers=auth)
                await sync_to_async(change, thread_sensitive=False)("maintenance")
                first = await on_b.until(is_node_status("status", "maintenance"))
                on_b.response.close()
                await sync_to_async(change, thread_sensitive=False)("online")
                # Resumed on the other process, from the id process B gave: Redis holds the window.
                on_a = await open_stream(
                    session, f"http://127.0.0.1:{port_a}/api/events", headers={**auth, "Last-Event-ID": first.id}
                )
                assert (await on_a.next()).data["status"] == "online"

        async_to_sync(scenario)()
    except BaseException:
        print(processes.logs())
        raise


def test_a_subscriber_too_far_behind_is_ended_not_skipped(settings: Any) -> None:
    """Past AIWM_EVENTS_QUEUE the stream ends (None), so the browser reconnects and resumes from
    the window, rather than the queue growing without bound or events going missing unannounced."""
    from aiwm_project.live_events import LiveEvent, Subscription

    settings.AIWM_EVENTS_QUEUE = 2

    async def scenario() -> list[Any]:
        subscription = Subscription(ORG_A, asyncio.get_running_loop())
        for n in range(3):
            subscription.put(LiveEvent(f"b00t:{n}", ORG_A, "node.status", {}))
        assert subscription.overflowed
        subscription.put(LiveEvent("b00t:9", ORG_A, "node.status", {}))  # after the end: dropped
        return [subscription.queue.get_nowait() for _ in range(subscription.queue.qsize())]

    assert async_to_sync(scenario)() == [None]


@pytest.mark.redis
def test_subscribers_arriving_together_share_one_redis_reader(settings: Any) -> None:
    """Subscribers reaching a cold process at once start one reader between them (two readers
    would hand every subscriber every event twice — the portal benchmark caught it)."""
    import os
    import uuid

    from aiwm_project.live_events import Hub

    settings.REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    settings.AIWM_EVENTS_STREAM = f"aiwm-events-test-{uuid.uuid4().hex}"
    fresh = Hub()

    async def scenario() -> list[int]:
        subscribed = await asyncio.gather(*(fresh.subscribe(ORG_A, None) for _ in range(8)))
        fresh.send(ORG_A, "node.status", {"_id": "n1", "status": "online"})
        for subscription, _ in subscribed:
            async with asyncio.timeout(5):
                await subscription.queue.get()
        await asyncio.sleep(0.5)  # a second reader's copy would have arrived by now
        return [subscription.queue.qsize() for subscription, _ in subscribed]

    assert async_to_sync(scenario)() == [0] * 8
