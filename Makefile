# cadbroker: common tasks. `make help` lists them.
# CRDs generated from the Rust types (src/crd); CI fails when they differ from the committed file.
CRDS := charts/cadbroker-crds/templates/crds.yaml

.PHONY: help run generate test test-rust test-browser test-in-cluster lint lint-charts bench bench-kube cluster-build cluster-up cluster-down helm-build

CLUSTER := tests/cluster/cluster.sh

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

run: ## run cadbroker on its embedded default (local desktops when installed, else simulated)
	cargo run --release -- serve

generate: ## regenerate the CRDs in charts/cadbroker-crds from the code
	cargo run -q -- crds > $(CRDS)

test: ## the whole suite: Rust tests, browser tests, then the local Kubernetes control plane and its tests
	cargo test --locked
	$(MAKE) --no-print-directory test-browser
	$(CLUSTER) run -- $(MAKE) --no-print-directory test-in-cluster

test-rust: ## unit, property, HTTP and CLI tests only (no cluster)
	cargo test --locked

test-browser: ## the portal in headless Chromium against real local desktops (tests/browser)
	cargo build --locked --bin cadbroker
	cd tests/browser && { test -d node_modules/playwright-core || npm ci --no-audit --no-fund; } && npm test

# tests/charts/run.sh: the charts, and RBAC proven with the chart's ServiceAccount, running the
# two cluster suites above again as that identity; any failure fails the run.
test-in-cluster: ## tests that need the running local cluster (KUBECONFIG set by cluster.sh run)
	$(CLUSTER) smoke
	cargo test --locked --features cluster-tests --test kube_backend --test kube_recovery --test request_rules
	tests/charts/run.sh

lint: ## formatting and clippy, as CI runs them
	cargo fmt --all -- --check
	cargo clippy --all-targets --all-features --locked -- -D warnings

lint-charts: ## helm lint of both charts (no cluster needed; the full chart tests run in `make test`)
	$(CLUSTER) helm -- lint --strict charts/cadbroker-crds
	$(CLUSTER) helm -- lint --strict charts/cadbroker -f charts/cadbroker/examples/values-oidc.yaml

bench: ## API benchmark on the simulated backend (docs/benchmarks.md)
	cargo bench --bench api

bench-kube: ## cluster-mode benchmark on the local cluster: warm claim to Ready, writes per session
	$(CLUSTER) run -- cargo bench --features cluster-tests --bench kube_claim

cluster-build: ## build the local cluster's binaries into ~/.cache/cadbroker
	$(CLUSTER) build

helm-build: ## build helm (chart tests) into ~/.cache/cadbroker/helm-<version>
	$(CLUSTER) build-helm

cluster-up: ## start the local cluster (kubeconfig: .cluster/kubeconfig)
	$(CLUSTER) up

cluster-down: ## stop the local cluster
	$(CLUSTER) down
