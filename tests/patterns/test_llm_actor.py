"""The ready-made llm actor's parts: prompt rendering, answer schemas, usage and
budgets, and the call itself over HTTP to a fake provider through litellm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors.llm import usage
from actors.llm.client import Completion, OutputError, parse_json
from actors.llm.handler import LLM, PromptError, RouteError, render, schema_model
from asya_agents.fakes import FakeLLMProvider

pytestmark = [pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


def test_render_fills_fields_and_leaves_other_braces_alone() -> None:
    fields = {"topic": "tea", "outline": {"points": ["a", "b"]}, "items": [1, 2]}
    text = render('Answer {"title": "..."} about {topic}: {outline[points]} {items[1]} {{x}}',
                  fields, key="prompt")
    assert text == 'Answer {"title": "..."} about tea: ["a", "b"] 2 {x}'


@pytest.mark.parametrize(("template", "message"), [
    ("{missing}", "prompt needs payload field 'missing' (the payload has: topic)"),
    ("{topic[x]}", "names 'x', which payload field 'topic' does not have"),
])
def test_render_names_what_is_missing(template: str, message: str) -> None:
    with pytest.raises(PromptError, match=message.replace("(", r"\(").replace(")", r"\)")):
        render(template, {"topic": "tea"}, key="prompt")


def test_schemas_check_the_answer_and_name_the_field() -> None:
    model = schema_model({"score": "float", "note": "str?"})
    assert model is not None
    assert parse_json('```json\n{"score": 0.5}\n```', model="m", schema=model) == {
        "score": 0.5, "note": None}
    with pytest.raises(OutputError, match="score"):
        parse_json('{"score": "high"}', model="m", schema=model)
    with pytest.raises(OutputError, match="without a JSON object"):
        parse_json("no idea", model="m")
    with pytest.raises(ValueError, match=r"schema.x: unknown type 'decimal'"):
        schema_model({"x": "decimal"})


def test_usage_adds_calls_and_flags_unpriced_ones() -> None:
    spent = usage.add(None, Completion("a", "m", 10, 5, 0.001))
    spent = usage.add(spent, Completion("b", "m", 3, 2, None))
    assert (spent["calls"], spent["total_tokens"], spent["cost"]) == (2, 20, 0.001)
    assert spent["unpriced_calls"] == 1
    assert usage.combine(spent, [spent, None])["calls"] == 4


def test_over_budget_names_the_first_limit_reached() -> None:
    spent = {"total_tokens": 900, "cost": 0.01}
    assert usage.over_budget(spent, {"max_hops": 10, "max_tokens": 1000}, hops=3) is None
    assert usage.over_budget(spent, {"max_hops": 3}, hops=3) == ("max_hops", 3.0, 3.0)
    assert usage.over_budget(spent, {"max_tokens": 900, "max_cost": 0.001}, hops=0) == (
        "max_tokens", 900.0, 900.0)
    assert usage.over_budget(spent, {"max_cost": None}, hops=99) is None


def llm(provider: FakeLLMProvider, **config: Any) -> LLM:
    return LLM(backend="llm", model="openai/gpt-4o-mini", api_base=provider.base_url,
               api_key="test-key", **config)


def test_run_calls_the_provider_through_litellm_and_prices_the_call() -> None:
    with FakeLLMProvider(responder=lambda r: '{"label": "yes"}') as provider:
        actor = llm(provider, system="Sort {kind}.", prompt="Q: {q}", output="json",
                    schema={"label": "str"}, output_key="answer", seed_key="seed")
        out = actor.run({"q": "tea?", "kind": "drinks", "seed": 7})
        [request] = provider.requests
    assert out["answer"] == {"label": "yes"}
    assert request["messages"] == [{"role": "system", "content": "Sort drinks."},
                                   {"role": "user", "content": "Q: tea?"}]
    assert request["seed"] == 7 and request["response_format"] == {"type": "json_object"}
    assert out["usage"]["calls"] == 1 and out["usage"]["cost"] > 0


def test_route_puts_the_labels_route_in_front_or_fails_naming_it() -> None:
    envelope = {"id": "e", "payload": {"text": "hi"},
                "route": {"prev": [], "curr": "classify", "next": ["end"]}}
    with FakeLLMProvider(responder=lambda r: "Billing.") as provider:
        actor = llm(provider, routes={"billing": ["billing"]})
        routed = actor.route(envelope)
        strict = llm(provider, routes={"tech": ["tech"]})
        with pytest.raises(RouteError, match=r"label 'billing'.*routes: tech"):
            strict.route(envelope)
    assert routed["route"]["next"] == ["billing", "end"]
    assert routed["payload"]["routed"] == {"label": "billing", "to": ["billing"],
                                           "fallback": False}


def test_offline_backend_serves_the_named_responder(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("ASYA_LLM_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    actor = LLM(offline="actors.llm.client.placeholder")
    out = actor.run({"text": "hello"})
    assert actor.client.backend == "offline"
    assert out["text"].startswith("(offline placeholder") and '"hello"' in out["text"]
    assert out["usage"]["calls"] == 1
