"""`GET /metrics` for Prometheus: the series a connected daemon's readings cause, and who may read them.

The fleet figures come from a live gateway after a python-socketio daemon registered and sent a
heartbeat; the service's own histograms count the requests, the step dispatch and the telemetry
flush that scenario caused. Access is checked through the test client (its REMOTE_ADDR is set
per request) for each configuration: a token, an allow-list, neither.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from asgiref.sync import async_to_sync
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemons import daemon_for, message
from tests.support.factories import AIModelFactory, NodeFactory
from tests.support.live_server import LiveGateway, Rest
from tests.support.personas import ORG_A

NODE = "node-gpu-01"
MIB = 1024 * 1024


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition by (name, sorted labels, without the process id)."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "pid"))
            found[(sample.name, labels)] = found.get((sample.name, labels), 0.0) + sample.value
    return found


def scrape(gateway: LiveGateway, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(f"{gateway.url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return samples(response.text)


def total(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum of a series over the labels not given."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and wanted.issubset(ls))


@pytest.mark.django_db(transaction=True)
def test_the_series_carry_what_a_connected_daemon_reported(gateway: LiveGateway) -> None:
    node, token = NodeFactory.with_token(node_id=NODE)
    NodeFactory.create(node_id="node-idle")  # offline: counted, but no GPU series
    AIModelFactory.create(model_id="tiny-v1", name="Tiny", node_id=NODE)
    rest = Rest(gateway)
    before = scrape(gateway)

    async def scenario() -> dict[str, Any]:
        async with daemon_for(gateway, {"token": token}) as daemon:
            await daemon.register(gpuDevices=[{"deviceId": "GPU-0", "model": "RTX 4090", "memoryTotal": 24576}])
            gpu = {"deviceId": "GPU-0", "utilization": 81, "memoryUsed": 18000, "temperature": 72}
            await daemon.send(message("telemetry.heartbeat", {"gpuStatus": [gpu]}))
            body = await rest.apost("/api/models/tiny-v1/download", {}, expect=200)
            await daemon.expect("model.download")
            await daemon.barrier()
            during = scrape(gateway)
            assert total(during, "aiwm_connected_sessions") == total(before, "aiwm_connected_sessions") + 1
            return {"body": body, "during": during}

    during = async_to_sync(scenario)()["during"]
    device = {"org_id": ORG_A, "node_id": NODE, "device": "GPU-0"}
    assert total(during, "aiwm_gpu_utilization_percent", **device) == 81
    assert total(during, "aiwm_gpu_temperature_celsius", **device) == 72
    assert total(during, "aiwm_gpu_memory_total_bytes", **device) == 24576 * MIB
    assert total(during, "aiwm_gpu_memory_used_bytes", **device) == 18000 * MIB
    assert total(during, "aiwm_gpu_utilization_percent", node_id="node-idle") == 0
    assert total(during, "aiwm_nodes", status="online") == 1 and total(during, "aiwm_nodes", status="offline") == 1
    assert total(during, "aiwm_nodes", status="maintenance") == 0  # every status, zero included
    assert total(during, "aiwm_executions", status="running") == 1
    assert total(during, "aiwm_outbox_commands", status="sent") == 1
    assert ("aiwm_deployments", (("status", "failed"),)) in during
    # The service's own series moved by what the scenario did.
    grew = {
        name: total(during, name, **labels) - total(before, name, **labels)
        for name, labels in (
            ("aiwm_step_dispatch_seconds_count", {}),
            ("aiwm_telemetry_flush_lag_seconds_count", {"kind": "heartbeat"}),
            ("aiwm_http_request_duration_seconds_count", {"route": "api/models/<id>/download", "method": "POST"}),
        )
    }
    assert all(v >= 1 for v in grew.values()), grew
    assert not any(
        name == "aiwm_http_request_duration_seconds_count" and ("route", f"api/nodes/{node.pk}") in ls
        for name, ls in during
    ), "a path, not a pattern, became a label"


@pytest.mark.django_db
def test_without_configuration_only_loopback_clients_are_answered(settings: Any) -> None:
    settings.AIWM_METRICS_TOKEN, settings.AIWM_METRICS_ALLOWED_IPS = "", []
    client = Client()
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    refused = client.get("/metrics", REMOTE_ADDR="10.1.2.3")
    assert refused.status_code == 403 and refused.json()["statusCode"] == 403
    assert client.post("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 405


@pytest.mark.django_db
def test_a_token_is_needed_by_every_client_loopback_too(settings: Any) -> None:
    settings.AIWM_METRICS_TOKEN, settings.AIWM_METRICS_ALLOWED_IPS = "s3cret-scrape", []
    client = Client()
    for header in (None, "Bearer wrong", "Basic s3cret-scrape"):
        extra = {"HTTP_AUTHORIZATION": header} if header else {}
        response = client.get("/metrics", REMOTE_ADDR="127.0.0.1", **extra)  # type: ignore[arg-type]
        assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["statusCode"] == 401
    ok = client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer s3cret-scrape")
    assert ok.status_code == 200 and b"aiwm_nodes" in ok.content


@pytest.mark.django_db
def test_an_allow_list_answers_only_its_addresses(settings: Any) -> None:
    settings.AIWM_METRICS_TOKEN, settings.AIWM_METRICS_ALLOWED_IPS = "", ["10.0.0.0/8", "192.168.1.5"]
    client = Client()
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.168.1.5").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403  # the list replaces loopback
    settings.AIWM_METRICS_TOKEN = "t"
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 401  # both apply
    assert client.get("/metrics", REMOTE_ADDR="172.16.0.1", HTTP_AUTHORIZATION="Bearer t").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer t").status_code == 200


@pytest.mark.django_db
def test_the_grafana_dashboard_uses_only_series_the_service_exports() -> None:
    dashboard = json.loads((Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for expr in expressions
        for name in re.findall(r"\baiwm_[a-z_]+", expr)
    }
    text = Client().get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    exported = {family.name for family in text_string_to_metric_families(text)}
    assert used and used <= exported, used - exported


def test_series_of_several_processes_are_summed_and_a_gone_process_leaves_no_live_gauge(tmp_path: Path) -> None:
    """Three real processes share AIWM_METRICS_DIR: two count and exit (one crashes), the third sums."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "AIWM_METRICS_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "aiwm_project.settings"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    setup = "import os, sys, django; django.setup(); from aiwm_project import metrics; "
    count = setup + "metrics.STEP_DISPATCH_LATENCY.observe(0.01); metrics.CONNECTED_SESSIONS.set(3); "
    for end in ("sys.exit(0)", "os._exit(1)"):  # a clean exit, and a crash that skips atexit
        subprocess.run([sys.executable, "-c", count + end], cwd=root, env=env, check=False, timeout=60)
    show = setup + "sys.stdout.write(metrics.exposition().decode())"
    done = subprocess.run([sys.executable, "-c", show], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = samples(done.stdout)
    assert total(found, "aiwm_step_dispatch_seconds_count") == 2  # both processes' observations
    assert total(found, "aiwm_connected_sessions") == 0  # neither is alive: no session gauge left
