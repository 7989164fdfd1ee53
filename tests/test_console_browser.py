"""The operator console in a real browser: Playwright driving Debian's chromium against the live
service, a python-socketio daemon reporting as a node would.

An operator logs in to the admin, sees the fleet dashboard, and a GPU reading the daemon sends
afterwards appears on the page without a reload (the live events stream); the API-token page
issues a token once. Screenshots of every page land in the folder the test prints.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model

from aiwm_project.auth import decode_token
from aiwm_project.iam import local_user_upsert
from tests.support.browser import chromium
from tests.support.daemons import daemon_for, message
from tests.support.executions import chain
from tests.support.factories import AIModelFactory, DeploymentFactory, NodeFactory
from tests.support.live_server import LiveGateway
from tests.support.personas import ORG_A

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "console-pw-123"
CONSOLE_APPS = ("nodes", "models_registry", "agents", "deployments", "executions", "conversations")


def screenshots() -> Path:
    folder = Path(os.environ.get("AIWM_SCREENSHOTS") or tempfile.mkdtemp(prefix="aiwm-console-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {folder}")
    return folder


def test_the_dashboard_follows_a_daemon_live_and_the_operator_gets_a_token(gateway: LiveGateway) -> None:
    browser_path = chromium()  # skips (fails under CI=true) without chromium
    from playwright.async_api import async_playwright

    local_user_upsert(username="ops", password=PASSWORD, org_id=ORG_A, roles=["organization.owner"], operator=True)
    assert get_user_model().objects.get(username="ops").is_superuser
    node, token = NodeFactory.with_token(node_id="node-gpu-01", name="GPU server 1")
    shots = screenshots()

    async def scenario() -> str:
        async with async_playwright() as pw, daemon_for(gateway, {"token": token}) as daemon:
            await daemon.register(gpuDevices=[{"deviceId": "GPU-0", "model": "RTX 4090", "memoryTotal": 24576}])
            await daemon.send(message("telemetry.heartbeat", {"gpuStatus": [{"deviceId": "GPU-0", "utilization": 81}]}))
            await daemon.barrier()
            browser = await pw.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            await page.goto(f"{gateway.url}/admin/login/?next=/admin/")
            await page.fill("#id_username", "ops")
            await page.fill("#id_password", PASSWORD)
            await page.click("input[type=submit]")
            cell = page.locator(f'tr[data-node="{node.pk}"][data-device="GPU-0"] [data-field="utilization"]')
            await cell.wait_for()
            assert (await cell.text_content() or "").strip() == "81 %"
            await page.locator("#live-state.on").wait_for(timeout=10_000)  # the stream is open
            await page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
            # A new reading reaches the open page by itself.
            gpu = {"deviceId": "GPU-0", "utilization": 37, "memoryUsed": 12288, "temperature": 66}
            await daemon.send(message("telemetry.heartbeat", {"gpuStatus": [gpu]}))
            await page.wait_for_function(
                "el => el.textContent.trim() === '37 %'", arg=await cell.element_handle(), timeout=10_000
            )
            row = page.locator(f'tr[data-node="{node.pk}"][data-device="GPU-0"]')
            assert "66 °C" in (await row.text_content() or "") and "12288 / 24576" in (await row.text_content() or "")
            await page.screenshot(path=str(shots / "dashboard-live.png"), full_page=True)
            # The operator's own API token: shown once, with its expiry.
            await page.click("text=API token")
            await page.click("input[value='Issue a token']")
            issued = (await page.locator("#api-token").input_value()).strip()
            expiry = await page.locator("#api-token-expiry").text_content()
            await page.screenshot(path=str(shots / "api-token.png"), full_page=True)
            await browser.close()
            assert expiry and "UTC" in expiry
            return issued

    issued = async_to_sync(scenario)()
    claims = decode_token(issued)
    assert claims["orgId"] == ORG_A and claims["roles"] == ["organization.owner"] and claims["username"] == "ops"
    assert claims["exp"] - claims["iat"] == 8 * 3600  # the default choice


async def _login(page: Any, url: str) -> None:
    await page.goto(f"{url}/admin/login/?next=/admin/")
    await page.fill("#id_username", "ops")
    await page.fill("#id_password", PASSWORD)
    await page.click("input[type=submit]")
    await page.locator("#fleet-dashboard").wait_for()


async def _answer(daemon: Any, command: dict[str, Any], *, settle: bool = True, **result: Any) -> None:
    """Acknowledge and complete a command; with `settle`, return once the service applied it."""
    await daemon.send(message("command.ack", {"originalMessageId": command["messageId"], "status": "received"}))
    body = {"originalMessageId": command["messageId"], "status": "success", "progress": 100, "result": result}
    await daemon.send(message("command.result", body, metadata=command["metadata"]))
    if settle:
        await daemon.barrier()


def test_an_operator_starts_and_stops_a_deployment_cancels_and_retries_an_execution_and_drains_a_node(
    gateway: LiveGateway,
) -> None:
    browser_path = chromium()
    from playwright.async_api import async_playwright

    local_user_upsert(username="ops", password=PASSWORD, org_id=ORG_A, roles=["organization.owner"], operator=True)
    node, token = NodeFactory.with_token(node_id="node-gpu-01")
    AIModelFactory.create(model_id="tiny-v1", name="Tiny", node_id="node-gpu-01")
    deployment = DeploymentFactory.create(deployment_id="dep-1", name="prod", model_id="tiny-v1", node_id="node-gpu-01")
    run = chain(2, node_id="node-gpu-01", execution_id="exec-ops")
    shots = screenshots()
    base = gateway.url

    async def scenario() -> None:
        async with async_playwright() as pw, daemon_for(gateway, {"token": token}) as daemon:
            await daemon.register()
            browser = await pw.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            await _login(page, base)

            # The deployment's page: Start, the daemon runs the workflow, the page says running.
            await page.goto(f"{base}/admin/deployments/deployment/{deployment.pk}/change/")
            await page.click("button[data-operation=start]")
            await page.locator(".messagelist .success").wait_for()
            await _answer(daemon, await daemon.expect("model.download"), settle=False, downloadPath="/models/tiny")
            await _answer(daemon, await daemon.expect("deployment.start"), endpoint="http://10.0.0.5:8080/v1")
            await page.reload()
            status = await page.locator("#id_status").input_value()
            assert status == "running"
            await page.screenshot(path=str(shots / "deployment-running.png"), full_page=True)
            await page.click("button[data-operation=stop]")
            await _answer(daemon, await daemon.expect("deployment.stop"))
            await page.reload()
            assert await page.locator("#id_status").input_value() == "stopped"
            events = await page.locator(".field-events_table").text_content() or ""
            assert "start.requested" in events and "stop.requested" in events

            # The execution's page: Start, Cancel (its node is told), Retry (sent again).
            await page.goto(f"{base}/admin/executions/execution/{run.pk}/change/")
            await page.click("button[data-operation=start]")
            first = await daemon.expect("model.download")
            await page.click("button[data-operation=cancel]")
            await page.locator(".messagelist .success").wait_for()
            assert (await daemon.expect("command.cancel"))["data"]["originalMessageId"] == first["messageId"]
            assert "cancelled" in (await page.locator(".messagelist .success").text_content() or "")
            assert await page.locator(".field-steps_table tr.aiwm-failed").count() == 1  # the withdrawn step
            await page.click("button[data-operation=retry]")
            again = await daemon.expect("model.download")
            assert again["messageId"] != first["messageId"] and again["metadata"]["executionId"] == "exec-ops"
            await page.screenshot(path=str(shots / "execution-retried.png"), full_page=True)

            # The node's page: Drain.
            await page.goto(f"{base}/admin/nodes/node/{node.pk}/change/")
            await page.click("button[data-operation=drain]")
            await page.locator(".messagelist .success").wait_for()
            assert await page.locator("#id_status").input_value() == "maintenance"
            assert "RTX" not in (await page.locator(".field-gpu_table").text_content() or "RTX")
            await page.screenshot(path=str(shots / "node-drained.png"), full_page=True)
            # Every list an operator opens, as a picture, each rendering its records.
            for model in apps.get_models():
                if model._meta.app_label in CONSOLE_APPS and model in admin.site._registry:
                    name = f"{model._meta.app_label}_{model._meta.model_name}"
                    response = await page.goto(f"{base}/admin/{model._meta.app_label}/{model._meta.model_name}/")
                    assert response is not None and response.status == 200, name
                    await page.screenshot(path=str(shots / f"list-{name}.png"), full_page=True)
            await browser.close()

    async_to_sync(scenario)()
    assert type(node).objects.get(pk=node.pk).status == "maintenance"
