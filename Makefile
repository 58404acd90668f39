# One place for the project's checks; the README and .ci/run call these targets.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: install lint typecheck test check bench-mesh bench-brokers bench-enhance bench-llm bench-spike bench-fanin clean k8s-generate

# torch is pinned first: 2.13.0 is the CPU build (a range would pull a CUDA build).
# constraints.txt pins what a fresh resolve would otherwise backtrack on.
install:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[all,dev]'

lint:
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck:
	$(BIN)/mypy

test:
	$(BIN)/pytest -q

check: lint typecheck test

bench-mesh:
	$(PY) bench/bench_mesh.py

# A 1 -> 100 fan-out gathered again (spec.fanIn) against the same fan-out whose children
# end on their own, on the embedded transport and RabbitMQ (skipped when absent).
bench-fanin:
	$(PY) bench/bench_fanin.py $(ARGS)

# The mesh on RabbitMQ beside raw aio-pika and a Celery chain (needs RabbitMQ on :5672).
bench-brokers:
	$(PY) bench/bench_brokers.py

# The enhance actor's batch path vs a per-image diffusers loop (a CUDA GPU; add
# ARGS=--tiny for the CPU check).
bench-enhance:
	$(PY) bench/bench_enhance.py $(ARGS)

# An LLM actor on the llm-resilient flavor vs retries that sleep in the worker, against
# the local fake provider (about 5 minutes).
bench-llm:
	$(PY) bench/bench_llm_resilience.py $(ARGS)

# A REST chain and the mesh under the same 10x spike, with plots (needs RabbitMQ on
# :5672; ARGS=--quick for a one-minute run, ARGS='--out docs/img' for docs/why.md's).
bench-spike:
	$(PY) bench/bench_spike.py $(ARGS)

# Generated Kubernetes files (tests fail while they differ): after changing the manifest
# models or a mesh that deploy/overlays renders.
k8s-generate:
	$(BIN)/asya crd -o deploy/crds
	$(BIN)/asya render mesh/example -o deploy/overlays/example/mesh --transport rabbitmq
	$(BIN)/asya render mesh/food-image -o deploy/overlays/food-image/mesh --transport rabbitmq \
		--overrides deploy/overlays/food-image/cluster.yaml

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
