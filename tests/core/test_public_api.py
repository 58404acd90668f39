"""Every module of the library says what it exports: ``__all__`` lists exactly the
public classes and functions it defines, and every name listed exists."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import asya_agents

MODULES = sorted(m.name for m in pkgutil.walk_packages(asya_agents.__path__, "asya_agents.")
                 if not m.name.endswith("__main__"))


def _defined_here(module: ModuleType) -> set[str]:
    return {name for name, obj in vars(module).items()
            if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
            and getattr(obj, "__module__", None) == module.__name__}


def test_the_walk_finds_the_library() -> None:
    assert {"asya_agents.runtime", "asya_agents.testing", "asya_agents.transports.base",
            "asya_agents.transports.rabbitmq"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_what_the_module_defines_and_nothing_missing(name: str) -> None:
    # Given a module of the library
    module = importlib.import_module(name)
    # When its __all__ is read
    exported = getattr(module, "__all__", None)
    # Then it exists, names only what is there, and leaves out nothing public
    assert exported is not None, f"{name} has no __all__"
    assert sorted(n for n in exported if not hasattr(module, n)) == [], name
    assert sorted(_defined_here(module) - set(exported)) == [], \
        f"{name} defines public names missing from __all__ (export them or add a _)"
    assert len(exported) == len(set(exported)), f"{name} lists a name twice"
