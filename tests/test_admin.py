"""The operator's admin: every entity registered, its pages render, edits go through services."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import Client

from aiwm_project.admin import OwnedModelAdmin
from aiwm_project.models import OwnedModel
from tests.conftest import Personas

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator() -> Client:
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def owned_models() -> list[type[OwnedModel]]:
    from django.apps import apps

    return [m for m in apps.get_models() if issubclass(m, OwnedModel)]


def test_every_entity_is_registered_with_the_owned_admin() -> None:
    for model in owned_models():
        assert isinstance(admin.site._registry.get(model), OwnedModelAdmin), model


def test_changelists_render_with_search_and_filters(operator: Client) -> None:
    for model in owned_models():
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        assert operator.get(url).status_code == 200, url
        assert operator.get(url, {"q": "gpu"}).status_code == 200, url
        assert operator.get(url, {"is_deleted__exact": "1"}).status_code == 200, url


def _node(personas: Personas) -> dict:
    body = {"nodeId": "node-gpu-01", "name": "GPU 1", "cpuCores": 8}
    return personas.owner_a.post("/api/nodes", body, format="json").json()


def test_edit_goes_through_the_update_service(operator: Client, personas: Personas) -> None:
    node = _node(personas)
    url = f"/admin/nodes/node/{node['_id']}/change/"
    page = operator.get(url)
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields}
    data.update({"name": "GPU 1 (rack 4)", "status": "maintenance", "role": "[]", "gpu_devices": "[]"})
    response = operator.post(url, {k: v for k, v in data.items() if v is not None})
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    updated = personas.owner_a.get(f"/api/nodes/{node['_id']}").json()
    assert updated["name"] == "GPU 1 (rack 4)" and updated["status"] == "maintenance"
    assert updated["updatedBy"] == "admin:ops"
    assert updated["createdBy"] == node["createdBy"]


def test_soft_delete_action_and_no_hard_delete(operator: Client, personas: Personas) -> None:
    node = _node(personas)
    assert operator.get(f"/admin/nodes/node/{node['_id']}/delete/").status_code == 403
    response = operator.post(
        "/admin/nodes/node/", {"action": "soft_delete_selected", "_selected_action": [node["_id"]]}
    )
    assert response.status_code == 302
    assert personas.owner_a.get(f"/api/nodes/{node['_id']}").status_code == 404
    from nodes.models import Node

    row = Node.objects.get(pk=node["_id"])
    assert row.is_deleted and row.updated_by == "admin:ops"


def test_no_add_in_admin(operator: Client) -> None:
    assert operator.get("/admin/nodes/node/add/").status_code == 403


def test_gateway_records_are_browsable_but_read_only(operator: Client, personas: Personas) -> None:
    node = _node(personas)
    personas.owner_a.post(f"/api/nodes/{node['_id']}/commands", {"type": "model.download"}, format="json")
    for url in ("/admin/nodes/nodecommand/", "/admin/nodes/nodemetric/", "/admin/deployments/deploymentlog/"):
        assert operator.get(url).status_code == 200, url
    assert operator.get("/admin/nodes/nodecommand/add/").status_code == 403
