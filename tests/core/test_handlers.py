"""Handlers: every shape the contract allows, and clear startup errors for the rest."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from asya_agents.errors import HandlerError
from asya_agents.testing import call_handler

STEPS = '''
import asyncio

def plain(payload):
    return {**payload, "seen": True}

async def coro(payload):
    await asyncio.sleep(0)
    return {**payload, "async": True}

def many(payload):
    return [{"i": i} for i in range(payload["n"])]

def gen(payload):
    for i in range(payload["n"]):
        yield {"i": i}

async def agen(payload):
    for i in range(payload["n"]):
        yield {"i": i}

def two_args(payload, other):
    return payload

class Model:
    built = 0

    def __init__(self, scale, bias=0):
        Model.built += 1
        self.scale, self.bias = scale, bias

    def predict(self, payload):
        return {"y": payload["x"] * self.scale + self.bias}

class Stored:
    def __init__(self, storage=None, tag="t"):
        self.storage, self.tag = storage, tag

    def get(self, payload):
        return {"storage": self.storage}

def broken_import():
    pass

NOT_CALLABLE = 3
'''


@pytest.fixture
def steps(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "hsteps.py").write_text(STEPS)
    (tmp_path / "hbroken.py").write_text("raise RuntimeError('boom at import')\n")
    sys.path.insert(0, str(tmp_path))
    yield "hsteps"
    sys.path.remove(str(tmp_path))
    for name in ("hsteps", "hbroken"):
        sys.modules.pop(name, None)


def test_sync_async_and_class_handlers_return_a_single_payload(steps: str) -> None:
    assert call_handler(f"{steps}.plain", {"a": 1}).items == [{"a": 1, "seen": True}]
    assert call_handler(f"{steps}.coro", {"a": 1}).items == [{"a": 1, "async": True}]
    result = call_handler(f"{steps}.Model.predict", {"x": 2}, config={"scale": 3, "bias": 1})
    assert (result.items, result.fanned) == ([{"y": 7}], False)


@pytest.mark.parametrize("name", ["many", "gen", "agen"])
def test_lists_and_generators_fan_out(steps: str, name: str) -> None:
    result = call_handler(f"{steps}.{name}", {"n": 3})
    assert result.fanned
    assert result.items == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_class_handlers_are_built_once_per_replica(steps: str) -> None:
    from asya_agents.handlers import load_handler

    handler = load_handler(f"{steps}.Model.predict", config={"scale": 1})
    module = sys.modules[steps]
    before = module.Model.built
    for _ in range(3):
        import asyncio

        asyncio.run(handler.call({"x": 1}))
    assert module.Model.built == before
    handler.close()


@pytest.mark.parametrize(
    ("path", "config", "message"),
    [
        ("no_such_module.func", None, "no module of 'no_such_module.func' could be imported"),
        ("hsteps.missing", None, "'hsteps' has no attribute 'missing'"),
        ("hsteps.two_args", None, "must take exactly one argument"),
        ("hsteps.Model", {"scale": 1}, "is a class; name a method"),
        ("hsteps.Model.predict", {"scal": 1}, "does not accept spec.config"),
        ("hsteps.plain", {"scale": 1}, "is a function but spec.config is set"),
        ("hsteps.NOT_CALLABLE", None, "is not callable"),
        ("hbroken.f", None, "raised RuntimeError: boom at import"),
    ],
)
def test_handlers_that_cannot_work_fail_at_startup_naming_path_and_why(
    steps: str, path: str, config: dict[str, int] | None, message: str
) -> None:
    from asya_agents.handlers import load_handler

    with pytest.raises(HandlerError) as err:
        load_handler(path, config=config)
    assert path.split(".")[0] in str(err.value)
    assert message in str(err.value)


def test_a_class_that_declares_storage_gets_the_actors_policy(steps: str,
                                                              tmp_path: Path) -> None:
    from asya_agents.handlers import load_handler
    from asya_agents.storage import StoragePolicy

    policy = StoragePolicy(roots=(tmp_path,))
    # Given a class with a `storage` parameter: it receives the policy, by keyword
    stored = load_handler(f"{steps}.Stored.get", config={"tag": "a"}, storage=policy)
    assert stored.instance.storage is policy and stored.instance.tag == "a"
    # unless spec.config sets storage itself
    mine = load_handler(f"{steps}.Stored.get", config={"storage": "mine"}, storage=policy)
    assert mine.instance.storage == "mine"
    # And a class without one is built as before, with no policy pushed on it
    model = load_handler(f"{steps}.Model.predict", config={"scale": 2}, storage=policy)
    assert vars(model.instance) == {"scale": 2, "bias": 0}
    for handler in (stored, mine, model):
        handler.close()
