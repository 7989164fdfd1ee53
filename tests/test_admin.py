"""The operator's admin: every entity registered, its pages render, edits go through services."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.test import Client

from aiwm_project.admin import OwnedModelAdmin
from aiwm_project.models import OwnedModel
from nodes.models import Node
from tests.support.factories import NodeCommandFactory, NodeFactory
from tests.support.personas import Personas

pytestmark = pytest.mark.django_db


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


def _node(personas: Personas) -> Node:
    return NodeFactory.create(node_id="node-gpu-01", name="GPU 1", cpu_cores=8, actor=personas.owner_a.principal)


def test_edit_goes_through_the_update_service(operator: Client, personas: Personas) -> None:
    node = _node(personas)
    url = f"/admin/nodes/node/{node.pk}/change/"
    page = operator.get(url)
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields}
    data.update({"name": "GPU 1 (rack 4)", "status": "maintenance", "role": "[]", "gpu_devices": "[]"})
    response = operator.post(url, {k: v for k, v in data.items() if v is not None})
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    updated = personas.owner_a.get(f"/api/nodes/{node.pk}").json()
    assert updated["name"] == "GPU 1 (rack 4)" and updated["status"] == "maintenance"
    assert updated["updatedBy"] == "admin:ops"
    assert updated["createdBy"] == node.created_by


def test_soft_delete_action_and_no_hard_delete(operator: Client, personas: Personas) -> None:
    node = _node(personas)
    assert operator.get(f"/admin/nodes/node/{node.pk}/delete/").status_code == 403
    response = operator.post("/admin/nodes/node/", {"action": "soft_delete_selected", "_selected_action": [node.pk]})
    assert response.status_code == 302
    assert personas.owner_a.get(f"/api/nodes/{node.pk}").status_code == 404
    row = Node.objects.get(pk=node.pk)
    assert row.is_deleted and row.updated_by == "admin:ops"


def test_no_add_in_admin(operator: Client) -> None:
    assert operator.get("/admin/nodes/node/add/").status_code == 403


def test_gateway_records_are_browsable_but_read_only(operator: Client, personas: Personas) -> None:
    node = _node(personas)
    NodeCommandFactory.create(node_id=node.node_id, actor=personas.owner_a.principal)
    for url in ("/admin/nodes/nodecommand/", "/admin/nodes/nodemetric/", "/admin/deployments/deploymentlog/"):
        assert operator.get(url).status_code == 200, url
    assert operator.get("/admin/nodes/nodecommand/add/").status_code == 403


def test_lists_hide_soft_deleted_rows_unless_asked(operator: Client) -> None:
    NodeFactory.create(node_id="node-live")
    gone = NodeFactory.create(node_id="node-gone")
    type(gone).objects.filter(pk=gone.pk).update(is_deleted=True)
    url = "/admin/nodes/node/"
    shown = lambda params: {n.node_id for n in operator.get(url, params).context["cl"].result_list}  # noqa: E731
    assert shown({}) == {"node-live"}
    assert shown({"is_deleted__exact": "1"}) == {"node-gone"}
    assert shown({"is_deleted__exact": "all"}) == {"node-live", "node-gone"}


def test_changelists_cost_the_same_queries_with_10_or_100_nodes(operator: Client) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.support.factories import AIModelFactory, DeploymentFactory

    def grow(start: int, end: int) -> None:
        for i in range(start, end):
            node = NodeFactory.create(node_id=f"node-{i:03d}", gpu_devices=[{"deviceId": "GPU-0", "memoryTotal": 1}])
            AIModelFactory.create(model_id=f"model-{i:03d}", name="M", node_id=node.node_id)
            DeploymentFactory.create(deployment_id=f"dep-{i:03d}", model_id=f"model-{i:03d}", node_id=node.node_id)
            NodeCommandFactory.create(node_id=node.node_id)

    urls = [f"/admin/{m._meta.app_label}/{m._meta.model_name}/" for m in owned_models()] + [
        "/admin/nodes/nodecommand/",
        "/admin/nodes/nodemetric/",
        "/admin/",
    ]

    def queries() -> dict[str, int]:
        counts = {}
        for url in urls:
            with CaptureQueriesContext(connection) as captured:
                assert operator.get(url).status_code == 200, url
            counts[url] = len(captured)
        return counts

    grow(0, 10)
    few = queries()
    grow(10, 100)
    assert queries() == few  # no query per row on any list


def test_read_only_json_documents_are_shown_indented_not_as_form_fields(operator: Client) -> None:
    from tests.support.executions import chain

    NodeFactory.create(node_id="node-gpu-01")
    execution = chain(2, node_id="node-gpu-01")
    type(execution).objects.filter(pk=execution.pk).update(error={"code": "STEP_TIMEOUT", "message": "slow"})
    html = operator.get(f"/admin/executions/execution/{execution.pk}/change/").content.decode()
    assert 'name="error"' not in html and "field-error_json" in html
    assert "<div class='aiwm-json'>{\n  &quot;code&quot;: &quot;STEP_TIMEOUT&quot;" in html


def test_planned_rows_are_djangos_rows_on_every_changelist(operator: Client, personas: Personas) -> None:
    """console.changelist renders a list's rows from a plan made once per page (for speed); the
    HTML must be Django's own `items_for_result`, cell for cell, on every registered list — with
    empty and whitespace values, booleans both ways, times, HTML in names, preserved filters."""
    from django.contrib.admin.templatetags import admin_list
    from django.contrib.auth import get_user_model
    from django.test import RequestFactory

    from console import changelist
    from tests.support.executions import chain
    from tests.support.factories import (
        AgentFactory,
        AIModelFactory,
        ConversationFactory,
        DeploymentFactory,
        DeploymentLogFactory,
        InstructionFactory,
        NodeMetricFactory,
        ToolFactory,
    )

    NodeFactory.create(node_id="node-a", name="<b>GPU</b> & co", cpu_cores=8)
    NodeFactory.create(node_id="node-b", name="   ")
    Node.objects.filter(node_id="node-a").update(websocket_connected=True, is_local=True, last_heartbeat=None)
    AIModelFactory.create(model_id="model-a", node_id="node-a")
    DeploymentFactory.create(deployment_id="dep-a", model_id="model-a", node_id="node-a")
    NodeCommandFactory.create(node_id="node-a")
    NodeMetricFactory.create(node_id="node-a")
    DeploymentLogFactory.create(deployment_id="dep-a", node_id="node-a")
    InstructionFactory.create(instruction_id="ins-a")
    ToolFactory.create(tool_id="tool-a")
    AgentFactory.create(agent_id="agent-a", instruction_id="ins-a", node_id="node-a")
    ConversationFactory.create(conversation_id="conv-a", agent_id="agent-a")
    chain(2, execution_id="exec-a", node_id="node-a")
    user = get_user_model().objects.get(username="ops")
    compared = 0
    for model, model_admin in admin.site._registry.items():
        owned = isinstance(model_admin, OwnedModelAdmin)
        for query in ({}, {"o": "-1", **({"is_deleted__exact": "all"} if owned else {})}):
            request = RequestFactory().get(f"/admin/{model._meta.app_label}/{model._meta.model_name}/", query)
            request.user = user
            cl = model_admin.get_changelist_instance(request)
            cl.formset = None  # as changelist_view sets it for a list without editable columns
            django_rows = ["".join(row) for row in admin_list.results(cl)]
            assert list(changelist.rows(cl)) == django_rows, model
            compared += len(django_rows)
    assert compared > 20
