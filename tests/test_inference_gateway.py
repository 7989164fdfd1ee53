"""The OpenAI-compatible gateway (/v1) through the live service, with the official `openai` SDK as
its client, routing to real OpenAI-compatible servers on real ports (tests/support/fake_openai.py:
fixed answers, delays, streams the test can break): API keys, errors, routing, failover, streams,
usage. The same path against llama.cpp serving a real model is in tests/test_node_models.py."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from deployments.models import Deployment
from inference.models import ApiKey, InferenceRecord
from inference.usage import RECORDER
from models_registry.models import AIModel
from tests.support.factories import AIModelFactory
from tests.support.fake_openai import FakeOpenAI
from tests.support.live_server import LiveGateway, Rest, eventually
from tests.support.personas import ORG_B, OWNER_B, OWNER_B_USER_ID
from tests.support.upstreams import flushed, serve

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]


def api_key(gateway: LiveGateway, rest: Rest | None = None, **body: Any) -> str:
    created = (rest or Rest(gateway)).post("/api/api-keys", {"name": "test key", **body})
    assert created["key"].startswith("aiwm_") and created["prefix"] == created["key"][:12]
    return created["key"]


def client(gateway: LiveGateway, key: str, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=20, **options)


# --- keys ---


def test_a_key_is_shown_once_listed_without_its_secret_and_revoked_by_deleting_it(
    gateway: LiveGateway, upstreams: list[FakeOpenAI]
) -> None:
    serve(upstreams, "dep-1")
    rest = Rest(gateway)
    created = rest.post("/api/api-keys", {"name": "bot", "models": ["m1"]})
    key = created["key"]
    assert created["apiKeyId"].startswith("key-") and created["models"] == ["m1"]
    stored = ApiKey.objects.get(api_key_id=created["apiKeyId"])
    assert key not in (stored.key_hash, stored.prefix) and len(stored.key_hash) == 64
    listed = rest.get("/api/api-keys")["data"]
    assert [k["apiKeyId"] for k in listed] == [created["apiKeyId"]]
    assert "key" not in listed[0] and "keyHash" not in listed[0]
    assert "key" not in rest.get(f"/api/api-keys/{created['_id']}")

    sdk = client(gateway, key)
    assert [m.id for m in sdk.models.list().data] == ["m1"]
    flushed()
    assert ApiKey.objects.get(pk=stored.pk).last_used_at is not None

    response = rest.session.delete(f"{gateway.url}/api/api-keys/{created['_id']}", timeout=10)
    assert response.status_code == 200, response.text
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk.models.list()
    assert caught.value.status_code == 401 and "revoked" in caught.value.message


def test_keys_are_refused_where_they_do_not_belong_and_when_they_are_not_valid(gateway: LiveGateway) -> None:
    key = api_key(gateway)
    # A key is for /v1 only: the REST API does not take it.
    assert httpx.get(f"{gateway.url}/api/nodes", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    for bad in ("aiwm_" + "x" * 43, "not-a-token", ""):
        answer = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {bad}"} if bad else {})
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key", answer.text
    expired = Rest(gateway).post("/api/api-keys", {"name": "old", "expiresAt": "2020-01-01T00:00:00Z"}, expect=400)
    assert "expiresAt" in str(expired)
    viewer = Rest(gateway, role="organization.viewer")
    viewer.post("/api/api-keys", {"name": "nope"}, expect=403)
    soon = Rest(gateway).post("/api/api-keys", {"name": "soon", "expiresAt": "2099-01-01T00:00:00Z"})
    ApiKey.objects.filter(api_key_id=soon["apiKeyId"]).update(expires_at="2021-01-01T00:00:00Z")
    from inference.services import KEYS, key_hash

    KEYS.forget(key_hash(soon["key"]))
    answer = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {soon['key']}"})
    assert answer.status_code == 401 and "expired" in answer.json()["error"]["message"]


# --- the endpoints, with the SDK ---


def test_chat_completions_completions_and_embeddings_through_the_sdk(
    gateway: LiveGateway, upstreams: list[FakeOpenAI]
) -> None:
    upstream = serve(upstreams, "dep-1")
    sdk = client(gateway, api_key(gateway))

    chat = sdk.chat.completions.create(model="m1", messages=MESSAGES)
    assert chat.choices[0].message.content == "Hello from the fake model."
    assert chat.usage is not None and chat.usage.completion_tokens == 6

    pieces = [
        c.choices[0].delta.content or ""
        for c in sdk.chat.completions.create(model="m1", messages=MESSAGES, stream=True)
        if c.choices
    ]
    assert "".join(pieces) == "Hello from the fake model."

    text = sdk.completions.create(model="m1", prompt="Once", max_tokens=3)
    assert text.choices[0].text == "Hello from the"
    vectors = sdk.embeddings.create(model="m1", input=["a", "b"])
    assert [len(v.embedding) for v in vectors.data] == [3, 3]

    # Named by its deployment, the model is called by its modelId upstream.
    by_deployment = sdk.chat.completions.create(model="dep-1", messages=MESSAGES)
    assert by_deployment.choices[0].message.content
    assert upstream.behaviour.requests[-1]["body"]["model"] == "m1"

    flushed(5)
    records = list(InferenceRecord.objects.order_by("id"))
    assert [(r.endpoint, r.stream, r.status_code) for r in records] == [
        ("chat.completions", False, 200), ("chat.completions", True, 200), ("completions", False, 200),
        ("embeddings", False, 200), ("chat.completions", False, 200),
    ]  # fmt: skip
    assert records[0].total_tokens == 11 and records[0].tokens_from == "backend" and records[0].ttft_ms is not None
    # The stream had no usage and the backend no known tokenizer: estimated, not zero.
    assert records[1].tokens_from == "estimate" and records[1].completion_tokens > 0
    model = AIModel.objects.get(model_id="m1")
    assert model.total_inference == 5 and model.total_tokens == sum(r.total_tokens for r in records)
    deployment = Deployment.objects.get(deployment_id="dep-1")
    assert deployment.total_inferences == 5 and deployment.average_latency > 0 and deployment.last_health_check


def test_errors_use_openais_body_and_status_codes(gateway: LiveGateway, upstreams: list[FakeOpenAI]) -> None:
    serve(upstreams, "dep-1")
    AIModelFactory.create(model_id="idle-model", node_id="node-1")
    sdk = client(gateway, api_key(gateway))
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.InternalServerError) as idle:
        sdk.chat.completions.create(model="idle-model", messages=MESSAGES)
    assert idle.value.status_code == 503 and idle.value.code == "no_deployment"
    limited = client(gateway, api_key(gateway, models=["other"]))
    with pytest.raises(openai.PermissionDeniedError):
        limited.chat.completions.create(model="m1", messages=MESSAGES)
    assert limited.models.list().data == []

    headers = {"Authorization": f"Bearer {api_key(gateway)}"}
    for body, code in ((b"{not json", "invalid_json"), (b"[1]", "invalid_json"), (b"{}", "model_required")):
        answer = httpx.post(f"{gateway.url}/v1/chat/completions", content=body, headers=headers)
        assert answer.status_code == 400 and answer.json()["error"]["code"] == code, answer.text
    assert httpx.get(f"{gateway.url}/v1/nothing", headers=headers).status_code == 404
    assert httpx.get(f"{gateway.url}/v1/chat/completions", headers=headers).status_code == 405


def test_an_organization_sees_and_calls_only_its_own_models(gateway: LiveGateway, upstreams: list[FakeOpenAI]) -> None:
    serve(upstreams, "dep-a")
    serve(upstreams, "dep-b", model_id="m-b", node_id="node-b", actor=OWNER_B)
    key_a = api_key(gateway)
    key_b = api_key(gateway, Rest(gateway, org_id=ORG_B, user_id=OWNER_B_USER_ID))
    assert [m.id for m in client(gateway, key_a).models.list().data] == ["m1"]
    sdk_b = client(gateway, key_b)
    assert [m.id for m in sdk_b.models.list().data] == ["m-b"]
    for name in ("m1", "dep-a"):
        with pytest.raises(openai.NotFoundError):
            sdk_b.chat.completions.create(model=name, messages=MESSAGES)
    sdk_b.chat.completions.create(model="m-b", messages=MESSAGES)
    flushed(1)
    b_usage = Rest(gateway, org_id=ORG_B, user_id=OWNER_B_USER_ID).get("/api/usage", {"groupBy": "model"})["data"]
    assert [(row["key"], row["requests"]) for row in b_usage] == [("m-b", 1)]
    a_usage = Rest(gateway).get("/api/usage", {"groupBy": "model"})["data"]
    assert a_usage == []  # org B's 404s were its own and counted nowhere


# --- routing ---


def test_requests_go_to_the_deployment_with_the_fewest_in_flight(
    gateway: LiveGateway, upstreams: list[FakeOpenAI]
) -> None:
    # llama.cpp's server answers one request at a time: at most one in flight per deployment.
    first = serve(upstreams, "dep-1", backend="llama.cpp", delay=0.8)
    second = serve(upstreams, "dep-2", backend="llama.cpp", delay=0.8)
    sdk = client(gateway, api_key(gateway))

    def call(_: int) -> str:
        raw = sdk.chat.completions.with_raw_response.create(model="m1", messages=MESSAGES)
        return raw.headers["x-aiwm-deployment"]

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        answered = list(pool.map(call, range(4)))
    took = time.monotonic() - started
    assert sorted(answered) == ["dep-1", "dep-1", "dep-2", "dep-2"]
    assert len(first.behaviour.requests) == len(second.behaviour.requests) == 2
    assert took >= 1.5  # two rounds of two: the third and fourth waited for a free slot


def test_a_dead_deployment_is_passed_over_before_the_first_byte(
    gateway: LiveGateway, upstreams: list[FakeOpenAI], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("inference.routing.CANDIDATE_SECONDS", 0.0)  # the deployments change during the test
    dead = serve(upstreams, "dep-1")
    alive = serve(upstreams, "dep-2")
    dead.stop()
    sdk = client(gateway, api_key(gateway))
    for _ in range(4):
        raw = sdk.chat.completions.with_raw_response.create(model="m1", messages=MESSAGES)
        assert raw.headers["x-aiwm-deployment"] == "dep-2"
    assert len(alive.behaviour.requests) == 4
    # A deployment saying it cannot answer now (503) is passed over too.
    Deployment.objects.filter(deployment_id="dep-1").update(status="stopped")
    busy = serve(upstreams, "dep-3", status=503)
    for _ in range(3):
        raw = sdk.chat.completions.with_raw_response.create(model="m1", messages=MESSAGES)
        assert raw.headers["x-aiwm-deployment"] == "dep-2"
    assert busy.behaviour.requests  # it was tried at least once
    alive.stop()
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="m1", messages=MESSAGES)
    assert caught.value.status_code == 502 and "could answer" in caught.value.message


def test_a_stream_broken_after_its_first_byte_ends_with_an_error_event_and_no_retry(
    gateway: LiveGateway, upstreams: list[FakeOpenAI], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("inference.routing.CANDIDATE_SECONDS", 0.0)  # dep-2 starts during the test
    breaking = serve(upstreams, "dep-1", token_gap=0.05, tokens=40, break_after=3)
    spare = serve(upstreams, "dep-2")
    Deployment.objects.filter(deployment_id="dep-2").update(status="stopped")  # only dep-1 at first
    headers = {"Authorization": f"Bearer {api_key(gateway)}"}
    body = {"model": "m1", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=20) as answer:
        assert answer.status_code == 200 and answer.headers["x-aiwm-deployment"] == "dep-1"
        Deployment.objects.filter(deployment_id="dep-2").update(status="running")  # there to fail over to
        received = b"".join(answer.iter_bytes())
    assert received.count(b"data: {") >= 3 and b"event: error" in received and b"upstream_error" in received
    assert b"[DONE]" not in received and breaking.behaviour.cancelled == 1
    assert spare.behaviour.requests == []  # the client had bytes already: not sent again elsewhere
    flushed(1)
    assert InferenceRecord.objects.get().status_code == 502


def test_a_client_that_leaves_cancels_the_upstream_request(gateway: LiveGateway, upstreams: list[FakeOpenAI]) -> None:
    upstream = serve(upstreams, "dep-1", token_gap=0.1, tokens=100)
    sdk = client(gateway, api_key(gateway))
    stream = sdk.chat.completions.create(model="m1", messages=MESSAGES, stream=True)
    for i, _chunk in enumerate(stream):
        if i == 2:
            break
    stream.close()
    assert eventually(lambda: upstream.behaviour.cancelled == 1, 10), upstream.behaviour
    assert upstream.behaviour.finished == 0

    def recorded() -> bool:
        RECORDER.flush()
        return InferenceRecord.objects.filter(status_code=499).exists()

    assert eventually(recorded, 5)


def test_a_stream_without_usage_is_counted_by_the_backends_tokenizer(
    gateway: LiveGateway, upstreams: list[FakeOpenAI]
) -> None:
    upstream = serve(upstreams, "dep-1", backend="llama.cpp")
    sdk = client(gateway, api_key(gateway))
    three: list[ChatCompletionMessageParam] = [{"role": "user", "content": "three words here"}]
    list(sdk.chat.completions.create(model="m1", messages=three, stream=True))
    flushed(1)
    record = InferenceRecord.objects.get()
    assert record.tokens_from == "tokenizer"
    assert (record.prompt_tokens, record.completion_tokens) == (3, 5)  # the fake counts words
    assert [r["body"]["input"] for r in upstream.behaviour.requests if r["path"] == "/extras/tokenize/count"] == [
        "three words here", "Hello from the fake model.",
    ]  # fmt: skip


def test_usage_answers_by_model_deployment_key_and_day(gateway: LiveGateway, upstreams: list[FakeOpenAI]) -> None:
    serve(upstreams, "dep-1")
    serve(upstreams, "dep-2", model_id="m2")
    rest = Rest(gateway)
    first, second = rest.post("/api/api-keys", {"name": "one"}), rest.post("/api/api-keys", {"name": "two"})
    for key, model, n in ((first["key"], "m1", 2), (second["key"], "m2", 1)):
        for _ in range(n):
            client(gateway, key).chat.completions.create(model=model, messages=MESSAGES)
    flushed(3)
    by = {g: rest.get("/api/usage", {"groupBy": g})["data"] for g in ("model", "deployment", "apiKey", "day")}
    assert [(r["key"], r["requests"], r["totalTokens"]) for r in by["model"]] == [("m1", 2, 22), ("m2", 1, 11)]
    assert [r["key"] for r in by["deployment"]] == ["dep-1", "dep-2"]
    assert sorted((r["key"], r["requests"]) for r in by["apiKey"]) == sorted(
        [(first["apiKeyId"], 2), (second["apiKeyId"], 1)]
    )
    [today] = by["day"]
    assert today["requests"] == 3 and today["averageLatency"] > 0
    assert rest.get("/api/usage", {"from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z"})["data"] == []
    rest.get("/api/usage", {"groupBy": "week"}, expect=400)
    rest.get("/api/usage", {"from": "2021-01-02T00:00:00Z", "to": "2021-01-01T00:00:00Z"}, expect=400)
    rest.get("/api/usage", {"from": "yesterday"}, expect=400)
