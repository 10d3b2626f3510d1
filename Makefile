# kubehistory — build, test, generate, verify, demo.
SHELL := /usr/bin/env bash
GO ?= go
BIN := bin

.PHONY: all build test test-deps test-unit test-e2e test-reliability test-reliability-broken test-leak-broken test-matrix-broken generate verify demo demo-down fuzz bench clean

all: build

build: ## Build kubehistory-apiserver into bin/
	$(GO) build -o $(BIN)/kubehistory-apiserver ./cmd/kubehistory-apiserver

test: test-deps ## Every test: unit, integration (embedded JetStream, real git), e2e on a real local control plane, and the reliability suite (verbose: it prints its figures)
	$(GO) test -count=1 -timeout 60m $$($(GO) list ./... | grep -v /test/reliability)
	@out=$$(mktemp); $(GO) test -count=1 -timeout 30m -v ./test/reliability/ >$$out 2>&1; rc=$$?; \
	  grep -E '^(=== RUN|--- |PASS|FAIL|ok|reliability:|\s+reliability_test)' $$out; \
	  if [ $$rc -ne 0 ]; then echo "---- the reliability suite failed: the last 400 lines of its output ----"; tail -n 400 $$out; fi; \
	  rm -f $$out; exit $$rc

test-repeat: ## The whole suite N times in a row (default 5), stopping at the first failure: shows it does not flake
	@n=$${N:-5}; for i in $$(seq 1 $$n); do echo "== make test, run $$i of $$n ($$(date -u +%H:%M:%S))"; $(MAKE) --no-print-directory test || { echo "run $$i of $$n FAILED"; exit 1; }; done; echo "== $$n runs in a row passed ($$(date -u +%H:%M:%S))"

test-deps: ## What the tests run beside Go: OpenSSH's sshd (Debian package, when missing) and the sops CLI (built from the module proxy, cached)
	hack/install-test-deps.sh
	hack/sops.sh

test-unit: ## Tests that need no control plane
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /test/)

test-reliability: ## The reliability suite alone (KUBEHISTORY_RELIABILITY_CHANGES sets the number of changes)
	$(GO) test -count=1 -timeout 30m -v ./test/reliability/

test-reliability-broken: ## The suite against a writer that acks before pushing: it must FAIL (shows the suite can fail)
	KUBEHISTORY_BUILD_TAGS=kubehistory_fault_ack_on_fetch $(GO) test -count=1 -timeout 30m -v ./test/reliability/ 2>&1 | grep -E '^(--- |PASS|FAIL|ok|reliability:|\s+reliability_test)'; \
	  status=$${PIPESTATUS[0]}; if [ $$status -eq 0 ]; then echo "the broken build passed: the suite did not catch it"; exit 1; fi; echo "the broken build failed, as it must"

test-leak-broken: ## The leak scan against a build that publishes bodies unredacted: it must FAIL (shows the scan can fail)
	KUBEHISTORY_BUILD_TAGS=kubehistory_fault_unredacted $(GO) test -count=1 -timeout 30m -v -run 'TestSecretValuesNeverStored' ./test/e2e/ 2>&1 | grep -E '^(--- |PASS|FAIL|ok|\s+leak_test)'; \
	  status=$${PIPESTATUS[0]}; if [ $$status -eq 0 ]; then echo "the broken build passed: the scan did not catch it"; exit 1; fi; echo "the broken build failed, as it must"

test-matrix-broken: ## The write matrix against a build whose ingest records no-op writes: it must FAIL (shows the matrix can fail)
	KUBEHISTORY_BUILD_TAGS=kubehistory_fault_keep_noop $(GO) test -count=1 -timeout 30m -v -run 'TestWriteMatrix' ./test/e2e/ 2>&1 | grep -E '^(--- |PASS|FAIL|ok|\s+matrix_test)'; \
	  status=$${PIPESTATUS[0]}; if [ $$status -eq 0 ]; then echo "the broken build passed: the matrix did not catch it"; exit 1; fi; echo "the broken build failed, as it must"

test-e2e: ## End-to-end tests on the local control plane (builds kube-apiserver and etcd once)
	$(GO) test -count=1 -timeout 60m -v ./test/...

generate: ## Regenerate deepcopy, conversion, clients, OpenAPI and CRDs from apis/
	hack/update-codegen.sh

verify: ## Fail on stale generated code, unformatted files or vet findings
	hack/verify-codegen.sh
	hack/verify-benchmarks.sh
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

demo: ## Run kubehistory for real on a local control plane and show the history
	hack/demo.sh

demo-down: ## Stop what `make demo` started (and only that)
	hack/demo.sh down

fuzz: ## Every fuzz target for a bounded time (FUZZTIME, default 20s each)
	hack/fuzz.sh

clean:
	rm -rf $(BIN)
