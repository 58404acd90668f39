"""End to end over real HTTP: a judge-like actor calls the local fake LLM provider
through litellm (no retries of its own) and the manifest's llm-resilient flavor does
the rest. The provider's rate limit runs on real time, so these tests do too; each
takes a couple of seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from asya_agents.envelope import Envelope
from asya_agents.fakes import FakeLLMProvider
from asya_agents.manifest import load_mesh
from asya_agents.resiliency.retry import PolicySet
from asya_agents.testing import LocalMesh

from .conftest import write_mesh
from .res_steps import ask_llm, import_litellm

# litellm keeps its HTTP clients in a module-level cache and never closes them.
pytestmark = [pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

JUDGE = """
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: judge}
spec:
  handler: res_steps.ask_llm
  flavors: [llm-resilient]
  concurrency: 8
  resiliency:
    actorTimeout: 10s
    policies:
      transient: {initialInterval: 100ms, maxInterval: 1s}
    RATE_LIMIT
"""


@pytest.fixture(scope="module", autouse=True)
def litellm_imported() -> None:
    """Import litellm once, before any replica thread does: its import takes seconds,
    which a handler thread would otherwise spend inside the actor's timeout."""
    import_litellm()


def judge_mesh(tmp_path: Path, rate_limit: str = "") -> Path:
    return write_mesh(tmp_path / "mesh", JUDGE.replace("RATE_LIMIT", rate_limit),
                      route=["judge"])


def raised(call: object) -> BaseException:
    try:
        ask_llm(call)  # type: ignore[arg-type]
    except Exception as exc:
        return exc
    raise AssertionError("the provider did not refuse")


def test_the_flavor_reads_a_real_429_and_its_retry_after(tmp_path: Path) -> None:
    policies = PolicySet(load_mesh(judge_mesh(tmp_path)).actors["judge"]
                         .spec.resiliency.policies)
    with FakeLLMProvider(rate=1, burst=1) as llm:
        payload = {"api_base": llm.base_url, "n": 1}
        ask_llm(payload)
        # Given a litellm.RateLimitError answered by the provider, Retry-After included
        exc = raised(payload)
        # When the flavor's policies decide
        decision = policies.decide(Envelope.create({}, ["judge"]), exc, actor="judge")
        # Then it is a retry no sooner than the provider asked (retry-after-ms), jittered
        assert type(exc).__module__ == "litellm.exceptions"
        assert decision.action == "retry"
        assert policies.policy_for(exc)[0] == "rate-limited"  # type: ignore[index]
        assert 0.5 < decision.delay <= 1.0 * 1.2
        llm.fail_next(1, status=503)
        assert policies.policy_for(raised(payload))[0] == "transient"  # type: ignore[index]


@pytest.mark.slow
@pytest.mark.parametrize("shared_limit", [False, True], ids=["adaptive", "rate-limited"])
def test_every_call_ends_once_under_the_providers_limit(
    tmp_path: Path, shared_limit: bool
) -> None:
    limit = "rateLimit: {perSecond: 12, burst: 1}" if shared_limit else ""
    with FakeLLMProvider(rate=20, burst=4) as llm, \
            LocalMesh(judge_mesh(tmp_path, limit), state_dir=tmp_path / "state",
                      replicas=2) as mesh:
        # Given 30 calls, two of which meet a 503, to a provider that allows 20/s (burst 4)
        llm.fail_next(2, status=503)
        ids = [mesh.send({"api_base": llm.base_url, "n": n}) for n in range(30)]
        # When the mesh has handled them
        mesh.join(ids, timeout=60)
        # Then every call succeeded exactly once, whatever the provider refused
        records = [mesh.result(i) for i in ids]
        assert {r.status for r in records} == {"succeeded"}
        assert llm.stats.ok == 30 and llm.stats.failed == 2
        if shared_limit:
            # the shared bucket (two replicas, 12/s together) kept under the provider's rate
            assert llm.stats.rate_limited <= 1
        else:
            # 8 x 2 calls in flight ran into 429s; Retry-After brought them back
            assert llm.stats.rate_limited > 0
