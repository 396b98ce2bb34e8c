"""The served app: API and Gradio UI on one loopback port, driven by the openai client and gradio_client."""

from __future__ import annotations

import httpx
import pytest
from gradio_client import Client
from openai import OpenAI

from app.ui import message_text


@pytest.fixture(scope="module")
def base_url(live_app) -> str:
    return live_app.url


def test_root_redirects_to_ui_and_ui_serves(base_url):
    response = httpx.get(base_url + "/", follow_redirects=True)
    assert response.status_code == 200
    assert str(response.url).endswith("/ui/")
    assert "gradio" in response.text.lower()
    assert httpx.get(base_url + "/health").status_code == 200


def test_api_answers_with_catalogue_recommendations(base_url, tiny_artefacts):
    client = OpenAI(base_url=base_url + "/v1", api_key="unused")
    reply = client.chat.completions.create(
        model="ilmrec", messages=[{"role": "user", "content": "I loved Toy Story and Finding Nemo"}]
    )
    recommendations = reply.model_extra["recommendations"]
    assert recommendations
    assert all(rec["item_id"] in tiny_artefacts.catalogue for rec in recommendations)


def test_ui_chat_endpoint_streams_reply_cards_and_continues_the_session(live_app):
    client = Client(live_app.url + "/ui/", verbose=False)
    history, cards, session_id, _ = client.predict(
        "I loved Toy Story and Finding Nemo", [], "", api_name="/chat"
    )
    assert [m["role"] for m in history] == ["user", "assistant"]
    stored = live_app.service.session(session_id)
    assert message_text(history[-1]["content"]) == stored.turns[-1].reply  # typed parts in Gradio 6
    titles = [live_app.service.catalogue[i].title for i in stored.turns[-1].recommended]
    assert titles and all(title in cards for title in titles)
    assert cards.count("data-kind='like'") == len(titles)

    history, _, same_id, _ = client.predict("not animated", history, session_id, api_name="/chat")
    assert same_id == session_id and len(history) == 4
    assert live_app.service.session(session_id).state.exclude_genres == ["Animation"]


def test_ui_api_exposes_only_the_chat_endpoint(live_app):
    endpoints = Client(live_app.url + "/ui/", verbose=False).view_api(print_info=False, return_format="dict")
    assert list(endpoints["named_endpoints"]) == ["/chat"]
    assert [p["parameter_name"] for p in endpoints["named_endpoints"]["/chat"]["parameters"]] == [
        "message", "history", "session_id"
    ]


@pytest.mark.parametrize(
    ("parts", "served", "absent"),
    [(("api",), ["/health", "/v1/models"], ["/ui/", "/"]), (("ui",), ["/health", "/ui/"], ["/v1/models"])],
)
def test_api_only_and_ui_only(live_app, tiny_settings, parts, served, absent):
    from fastapi.testclient import TestClient

    from app.server import create_app

    with TestClient(create_app(tiny_settings, live_app.service, parts)) as client:
        for path in served:
            assert client.get(path).status_code == 200, path
        for path in absent:
            assert client.get(path, follow_redirects=False).status_code == 404, path
    with pytest.raises(ValueError, match="parts"):
        create_app(tiny_settings, live_app.service, ("admin",))


@pytest.mark.parametrize("parts", [("api", "ui"), ("ui",)])
def test_an_app_that_owns_its_service_closes_it_on_shutdown(tiny_settings, tiny_artefacts, parts):
    from fastapi.testclient import TestClient

    from app.commands import build_service
    from app.server import create_app

    owned, borrowed = build_service(tiny_settings, tiny_artefacts), build_service(tiny_settings, tiny_artefacts)
    for service, owns in ((owned, True), (borrowed, False)):
        with TestClient(create_app(tiny_settings, service, parts, owns_service=owns)) as client:
            assert client.get("/health").status_code == 200 and service.engine.health()
    assert not owned.engine.health(), "ilmrec serve's app closes the LLM engine (an in-process vLLM's processes)"
    assert borrowed.engine.health(), "an app given a service it does not own leaves it open"
