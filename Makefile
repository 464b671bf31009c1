# Stockade's build and test entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help venv testbin conformance-suite go-test e2e-deps run test unit integration e2e cluster-up cluster-down lint crds bench bench-startup soak conformance

help:
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/'

$(VENV)/.installed: pyproject.toml devkit/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -e ./devkit
	touch $@

venv: $(VENV)/.installed ## Python virtualenv with Stockade, its development kit (devkit/) and dev tools

testbin: ## Build the pinned Kubernetes and etcd binaries (cached in ~/.cache/stockade)
	hack/testbin/build.sh

conformance-suite: ## Build the upstream conformance suite of the same version: e2e.test, ginkgo, agnhost (cached)
	hack/testbin/build.sh conformance

e2e-deps: ## Debian packages of the local super cluster: containerd, runc, CNI plugins, iptables… (root)
	e2e/install-deps

run: venv testbin e2e-deps ## Stockade's main job: local super cluster, operator, an example Tenant (see README)
	$(VENV)/bin/stockade up $(ARGS)

cluster-up: venv testbin e2e-deps ## Bring the local super cluster up (root; idempotent)
	e2e/cluster up

cluster-down: venv ## Tear the local super cluster down and restore the host
	e2e/cluster down

crds: venv ## Regenerate crds/ from the pydantic model
	$(PY) -m stockade.crd

lint: venv ## ruff and mypy
	$(VENV)/bin/ruff check operator devkit tests bench
	$(VENV)/bin/ruff format --check operator devkit tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy bench/*.py  # the benchmarks are files, not a package of the config's
	test -z "$$(gofmt -l images/kubelet hack/testbin/kstatus)" || { gofmt -l images/kubelet hack/testbin/kstatus; echo "gofmt: the files above are not formatted"; exit 1; }

go-test: ## The kubelet API's Go tests (images/kubelet)
	cd images/kubelet && go vet ./... && go test ./...

unit: venv go-test ## Unit tests: pure logic, no processes (and the kubelet API's Go tests)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: venv testbin ## Integration tests against real etcd and kube-apiserver
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

e2e: venv testbin conformance-suite e2e-deps ## e2e tier: the main command, then a local super cluster up, the e2e tests, down
	e2e/run $(PYTEST_ARGS)

test: venv testbin conformance-suite e2e-deps lint go-test ## Everything CI runs: lint, unit, integration and e2e tiers
	$(PY) -m pytest tests/unit tests/integration $(PYTEST_ARGS)
	e2e/run $(PYTEST_ARGS)

bench: venv testbin ## Syncer benchmark: 20 tenants x 250 pods (ARGS="--tenants 2 --pods 20" for a quick one)
	$(PY) bench/syncer_bench.py $(ARGS)

# The local cluster's kubeconfig, computed by the shell: `e2e/cluster down` stops every process whose
# command line names the cluster's folders, and the recipe's own shell must not be one of them.
LOCAL_KUBECONFIG = $$($(PY) -c 'from stockade_dev.localcluster.node import Layout; print(Layout.from_env().kubeconfig)')

bench-startup: venv testbin e2e-deps ## Start-up benchmark on a fresh local super cluster (results in bench/results/startup.json)
	e2e/cluster up
	KUBECONFIG=$(LOCAL_KUBECONFIG) $(PY) bench/startup_bench.py $(ARGS); rc=$$?; e2e/cluster down; exit $$rc

soak: venv testbin e2e-deps ## Chaos soak on a fresh local super cluster, bounded (ARGS="--tenants 2 --minutes 8"; results in bench/results/soak.json)
	e2e/cluster up
	KUBECONFIG=$(LOCAL_KUBECONFIG) $(PY) bench/soak.py $(ARGS); rc=$$?; e2e/cluster down; exit $$rc

conformance: venv testbin conformance-suite e2e-deps ## [Conformance] tests vs a tenant and the super cluster, fresh local cluster (ARGS="--selection ci", "--focus REGEX"; results in bench/results/)
	e2e/cluster up
	KUBECONFIG=$(LOCAL_KUBECONFIG) $(PY) bench/conformance.py $(ARGS); rc=$$?; e2e/cluster down; exit $$rc
