# kubeoauth — `make help` lists the targets.

# Tools and control-plane binaries are cached outside the checkout, keyed by version, so
# a clean clone (CI) reuses them.
CACHE ?= $(or $(KUBEOAUTH_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/kubeoauth)
LOCALBIN ?= $(CACHE)/bin

CONTROLLER_GEN_VERSION ?= v0.23.0
GOLANGCI_LINT_VERSION ?= v2.15.0
CRD_REF_DOCS_VERSION ?= v0.3.0
HELM_VERSION ?= v4.3.1
# The relying party the end-to-end tests put in front of an app (docs/integrations/oauth2-proxy.md).
OAUTH2_PROXY_VERSION ?= v7.15.6
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_GEN_VERSION)
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
CRD_REF_DOCS ?= $(LOCALBIN)/crd-ref-docs-$(CRD_REF_DOCS_VERSION)
HELM ?= $(LOCALBIN)/helm-$(HELM_VERSION)
OAUTH2_PROXY ?= $(LOCALBIN)/oauth2-proxy-$(OAUTH2_PROXY_VERSION)

IMG ?= ghcr.io/kubeoauth/manager:dev
# The token server's version (X-Kubeoauth-Version, kubeoauth_build_info, `tokenserver version`).
VERSION ?= dev
VERSION_LDFLAGS = -X github.com/kubeoauth/kubeoauth/internal/version.Version=$(VERSION)
# Test builds of the token server (docs/upgrades.md, "Test builds").
TOKENSERVER_VARIANTS = v2test v4test crashloop errors badexpand
KUBECTL ?= kubectl
# Extra flags for go test, e.g. TEST_FLAGS="-run Validation -v".
TEST_FLAGS ?=

SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Display this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen crd-ref-docs ## Generate CRDs (config/crd/bases, the chart's templates/crds), RBAC (config/rbac), the chart's copies and docs/api.md.
	$(CONTROLLER_GEN) crd paths="./api/..." output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=manager-role paths="./controllers/..." output:rbac:artifacts:config=config/rbac
	hack/chart-crds.sh config/crd/bases charts/kubeoauth/templates/crds
	cp config/rbac/role.yaml charts/kubeoauth/files/manager-role.yaml
	cp config/admission/finalizer_policy.yaml charts/kubeoauth/files/finalizer-policy.yaml
	$(CRD_REF_DOCS) --source-path=./api/v1alpha1 --config=hack/api-docs/config.yaml --renderer=markdown \
		--output-path=docs/.api-reference.md --log-level=error
	# crd-ref-docs links a named map's underlying type to an anchor that does not exist (PodLabels).
	{ cat hack/api-docs/intro.md; sed -e '1,/^## oauth.kubeoauth.io/d' \
		-e 's/\[map\[string\]\([A-Za-z]*\)\](#map\[string\]\([a-z]*\))/object (keys:string, values:[\1](#\2))/' \
		docs/.api-reference.md; } >docs/api.md
	rm docs/.api-reference.md

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods, and the CRDs' schema digests the manager is built with.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."
	go generate ./cmd/manager/

.PHONY: fmt
fmt: ## Run gofmt on the code.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: golangci-lint ## Run golangci-lint.
	$(GOLANGCI_LINT) run ./...

.PHONY: test
test: manifests generate vet control-plane helm ## Run all tests: real kube-apiserver (envtest) and real PostgreSQL.
	KUBEBUILDER_ASSETS="$${KUBEBUILDER_ASSETS:-$$(hack/control-plane.sh)}" KUBEOAUTH_HELM="$(HELM)" go test $(TEST_FLAGS) ./...

ROUNDS ?= 20
NEIGHBOUR ?= 1
.PHONY: shake
shake: manifests generate control-plane helm ## Run make test's packages ROUNDS times (default 20), beside a CPU-bound neighbour on every core unless NEIGHBOUR=0; lists each failed test with how often.
	KUBEBUILDER_ASSETS="$${KUBEBUILDER_ASSETS:-$$(hack/control-plane.sh)}" KUBEOAUTH_HELM="$(HELM)" \
		go run ./hack/shake -rounds $(ROUNDS) $(if $(filter 1,$(NEIGHBOUR)),-neighbour) -test-flags "$(TEST_FLAGS)" ./...

# A -run pattern for make test-e2e, e.g. E2E_RUN='TestEndToEnd/Upgrades' (the demo
# always runs first: it brings up what the scenarios need).
E2E_RUN ?=
.PHONY: test-e2e
test-e2e: localcluster tokenserver-variants helm oauth2-proxy ## End-to-end tests on the local cluster (root): demo, browser consent, restarts, blue-green upgrades under load, oauth2-proxy and kubectl as relying parties, helm uninstall.
	hack/localcluster/install-packages.sh
	go build -o bin/demo ./hack/demo
	go build -o bin/echo-headers ./hack/echo-headers
	install -m 0755 $(OAUTH2_PROXY) bin/oauth2-proxy
	go build -o bin/upstream-op ./hack/upstream-op
	KUBEOAUTH_E2E_ASSETS="$(CLUSTER_ASSETS)" KUBEOAUTH_HELM="$(HELM)" go test -tags e2e -count=1 -timeout 20m -v \
		$(if $(E2E_RUN),-run '$(E2E_RUN)') ./test/e2e/

.PHONY: helm-lint
helm-lint: helm ## Lint the Helm chart and render it with its default values.
	$(HELM) lint --strict charts/kubeoauth
	$(HELM) lint --strict charts/kubeoauth --set serviceMonitor.enabled=true --set prometheusRule.enabled=true --set replicas=2
	$(HELM) template kubeoauth charts/kubeoauth --namespace kubeoauth-system >/dev/null

FUZZTIME ?= 30s
.PHONY: fuzz
fuzz: ## Fuzz the token endpoint and the admin API for FUZZTIME each (make test runs the seeds).
	go test -run XXX -fuzz FuzzTokenEndpoint -fuzztime $(FUZZTIME) ./internal/tokenserver/
	go test -run XXX -fuzz FuzzAdminPutClient -fuzztime $(FUZZTIME) ./internal/tokenserver/

.PHONY: verify
verify: verify-files manifests generate ## Fail when generated files or go.mod/go.sum are stale, or a binary or big file is tracked.
	go mod tidy
	@if [ -n "$$(git status --porcelain -- api config charts docs go.mod go.sum cmd/manager/zz_generated.crddigests.go)" ]; then \
		echo "Generated files or go.mod are stale; run 'make manifests generate' and 'go mod tidy', then commit:"; \
		git status --porcelain -- api config charts docs go.mod go.sum cmd/manager/zz_generated.crddigests.go; \
		git --no-pager diff --stat -- api config charts docs go.mod go.sum cmd/manager/zz_generated.crddigests.go; \
		exit 1; \
	fi

.PHONY: verify-files
verify-files: ## Fail when git tracks an executable, another binary file (bar doc images) or a file over 1 MiB.
	hack/check-tracked-files.sh

.PHONY: run-tokenserver
run-tokenserver: ## Run the token server by hand on a throwaway PostgreSQL; prints curl commands to try.
	go run ./hack/tokenserver-dev

.PHONY: bench-tokenserver
bench-tokenserver: ## Benchmark the token server on a throwaway PostgreSQL (64 workers); see docs/benchmarks.md.
	go run ./hack/bench-tokenserver $(BENCH_FLAGS)

.PHONY: bench-operator
bench-operator: manifests control-plane ## Benchmark the operator: 10,000 OAuthClients on envtest with a real token server.
	KUBEBUILDER_ASSETS="$${KUBEBUILDER_ASSETS:-$$(hack/control-plane.sh)}" go run ./hack/bench-operator $(BENCH_FLAGS)

.PHONY: demo
demo: ## The README's demo: the local cluster, the operator by Helm, a TokenServer, tokens issued and revoked (root).
	hack/localcluster/install-packages.sh
	$(MAKE) --no-print-directory localcluster helm
	go build -o bin/demo ./hack/demo
	bin/demo --kubectl "$(CLUSTER_ASSETS)/kubectl" --helm "$(HELM)" --assets "$(CLUSTER_ASSETS)"

.PHONY: demo-down
demo-down: cluster-down ## Stop the demo's cluster: every process it started, its files and network devices.

##@ Local cluster

CLUSTER_ASSETS = $$(hack/control-plane.sh etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)

.PHONY: localcluster
localcluster: ## Build the local-cluster tool and the binaries its image map names (bin/).
	go build -o bin/manager ./cmd/manager
	go build -o bin/tokenserver ./cmd/tokenserver
	go build -o bin/localcluster ./hack/localcluster

.PHONY: cluster-up
cluster-up: localcluster ## Start the local cluster (root; prints the kubeconfig). Idempotent.
	bin/localcluster up --assets "$(CLUSTER_ASSETS)"

.PHONY: cluster-status
cluster-status: ## Show what of the local cluster runs.
	@bin/localcluster status

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and remove its files.
	@if [ -x bin/localcluster ]; then bin/localcluster down; else go run ./hack/localcluster down; fi

##@ Build

.PHONY: build
build: generate vet ## Build the manager and tokenserver binaries into bin/.
	go build -o bin/manager ./cmd/manager
	go build -ldflags "$(VERSION_LDFLAGS)" -o bin/tokenserver ./cmd/tokenserver

.PHONY: tokenserver-variants
tokenserver-variants: ## Build the test token servers bin/tokenserver-{v2test,v4test,crashloop,errors,badexpand} (version $(VERSION)-<variant>) and -v3test (v2test again, version $(VERSION)-v3-v2test).
	for v in $(TOKENSERVER_VARIANTS); do \
		go build -tags $$v -ldflags "$(VERSION_LDFLAGS)" -o bin/tokenserver-$$v ./cmd/tokenserver; \
	done
	go build -tags v2test -ldflags "$(VERSION_LDFLAGS)-v3" -o bin/tokenserver-v3test ./cmd/tokenserver

.PHONY: run
run: manifests generate vet ## Run the manager against the cluster in ~/.kube/config.
	go run ./cmd/manager

.PHONY: docker-build
docker-build: ## Build the manager image (needs a container engine; there is none on our dev machines).
	docker build --build-arg COMPONENT=manager -t $(IMG) .

##@ Deployment

.PHONY: install
install: manifests ## Install the CRDs into the cluster in ~/.kube/config.
	$(KUBECTL) apply --server-side -f config/crd/bases

.PHONY: uninstall
uninstall: manifests ## Uninstall the CRDs (deletes every OAuthClient, ConsentGrant and TokenServer).
	$(KUBECTL) delete --ignore-not-found -f config/crd/bases

.PHONY: deploy
deploy: manifests ## Deploy the operator (config/default) to the cluster in ~/.kube/config.
	$(KUBECTL) apply --server-side -k config/default

.PHONY: undeploy
undeploy: ## Remove the operator deployed by `make deploy`.
	$(KUBECTL) delete --ignore-not-found -k config/default

##@ Dependencies

.PHONY: tools
tools: controller-gen golangci-lint crd-ref-docs helm oauth2-proxy control-plane ## Install every pinned tool and build the control-plane binaries.

.PHONY: control-plane
control-plane: ## Build (once) etcd, kube-apiserver and kubectl from source.
	@if [ -z "$$KUBEBUILDER_ASSETS" ]; then hack/control-plane.sh etcd kube-apiserver kubectl >/dev/null; fi

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN)
$(CONTROLLER_GEN):
	GOBIN=$(LOCALBIN)/.tmp-cg go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
	mv $(LOCALBIN)/.tmp-cg/controller-gen $@ && rm -rf $(LOCALBIN)/.tmp-cg

.PHONY: crd-ref-docs
crd-ref-docs: $(CRD_REF_DOCS)
$(CRD_REF_DOCS):
	GOBIN=$(LOCALBIN)/.tmp-crd go install github.com/elastic/crd-ref-docs@$(CRD_REF_DOCS_VERSION)
	mv $(LOCALBIN)/.tmp-crd/crd-ref-docs $@ && rm -rf $(LOCALBIN)/.tmp-crd

.PHONY: helm
helm: $(HELM)
$(HELM):
	GOBIN=$(LOCALBIN)/.tmp-helm go install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)
	mv $(LOCALBIN)/.tmp-helm/helm $@ && rm -rf $(LOCALBIN)/.tmp-helm

.PHONY: oauth2-proxy
oauth2-proxy: $(OAUTH2_PROXY)
$(OAUTH2_PROXY):
	GOBIN=$(LOCALBIN)/.tmp-o2p go install github.com/oauth2-proxy/oauth2-proxy/v7@$(OAUTH2_PROXY_VERSION)
	mv $(LOCALBIN)/.tmp-o2p/oauth2-proxy $@ && rm -rf $(LOCALBIN)/.tmp-o2p

.PHONY: golangci-lint
golangci-lint: $(GOLANGCI_LINT)
$(GOLANGCI_LINT):
	GOBIN=$(LOCALBIN)/.tmp-gl go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(LOCALBIN)/.tmp-gl/golangci-lint $@ && rm -rf $(LOCALBIN)/.tmp-gl
