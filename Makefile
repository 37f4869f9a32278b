# The compiler is pinned: the committed bpf2go outputs are what this clang
# makes of bpf/, and CI checks that they still are.
CLANG ?= clang-19
STRIP ?= llvm-strip-19
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)
export PATH := $(dir $(GO)):$(PATH)

BIN := bin/sluice

# The release version: internal/version's default unless overridden
# (make build VERSION=1.2.3), so that the binary, `sluice version` and the
# image tag (deploy/daemonset.yaml) agree.
VERSION ?= $(shell sed -n 's/^var Version = "\(.*\)"$$/\1/p' internal/version/version.go)
VERSION_VAR := github.com/sluice-lb/sluice/internal/version.Version
IMAGE ?= ghcr.io/sluice-lb/sluice

# The test API server of hack/k8s/apiserver.sh (make k8s-up).
K8S_DIR ?= /run/sluice-k8s

.PHONY: all deps build version image k8s-binaries k8s-up k8s-down deploy-check cluster-binaries cluster-up cluster-down test-cluster cluster-compare cluster-e2e-table generate check-generate test test-unit vmtest vmtest-all bench bench-datapath bench-lab bench-control bench-k8s demo lab-down clean

all: build

deps:
	@./hack/deps.sh

# A static binary (the image has no libc), without local paths.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X $(VERSION_VAR)=$(VERSION)" -o $(BIN) ./cmd/sluice

version:
	@echo $(VERSION)

# The agent's image (Dockerfile), tagged with the version the DaemonSet runs.
image:
	docker build -t $(IMAGE):$(VERSION) .

# kube-apiserver, kubectl and etcd, built from the Go module proxy into
# /var/cache/sluice-k8s (about 12 minutes the first time).
k8s-binaries:
	@./hack/k8s/binaries.sh

# A real API server on 127.0.0.1 for tests and experiments; then
# `. $(K8S_DIR)/env` sets KUBECONFIG. Its data stays in K8S_DIR.
k8s-up:
	./hack/k8s/apiserver.sh start $(K8S_DIR)

k8s-down:
	./hack/k8s/apiserver.sh stop $(K8S_DIR)

# deploy/ as a real API server validates it (server-side dry run).
deploy-check:
	./hack/k8s/deploy-check.sh

# The offline lab cluster's binaries (kubelet, controller-manager,
# scheduler, kube-proxy, CoreDNS, agnhost, e2e.test), built from the Go
# module proxy into the same cache (15-20 minutes the first time).
cluster-binaries:
	@./hack/cluster/binaries.sh

# A two-node Kubernetes cluster in network namespaces, with no service
# proxy; `hack/cluster/deploy.sh sluice` (or kube-proxy) adds one. Then
# `. /run/sluice-cluster/env` sets KUBECONFIG.
cluster-up: deps build
	./hack/cluster/cluster.sh up

cluster-down:
	./hack/cluster/cluster.sh down

# The cluster suite: up, sluice deployed, the tutorials' labs and
# Kubernetes' Service conformance specs, down.
test-cluster: deps build
	GO=$(GO) ./hack/cluster/test.sh

# The same workloads with kube-proxy (nftables), then with sluice, on the
# lab cluster: the README's comparison table.
cluster-compare: deps build
	GO=$(GO) ./hack/cluster/compare.sh

# Kubernetes' non-disruptive [sig-network] Services specs (beyond the 15
# conformance ones) with kube-proxy, then with sluice: the README's table.
cluster-e2e-table: deps build
	GO=$(GO) ./hack/cluster/e2e-table.sh

# Regenerate the Go bindings and objects from bpf/*.c.
generate: deps
	BPF2GO_CC=$(CLANG) BPF2GO_STRIP=$(STRIP) $(GO) generate ./bpf/

# Fails when the committed bpf2go outputs differ from what the pinned
# compiler makes of the sources.
check-generate: generate
	@git diff --exit-code -- bpf/ || { echo "bpf2go outputs are stale: run make generate and commit"; exit 1; }

# Everything, privileged suites included (run as root). With CI=true a
# privileged test that cannot run fails instead of skipping.
test: deps
	GO=$(GO) ./hack/test.sh

# The privileged suites in a VM on another kernel: KERNEL=5.10|6.1|6.12|bpo|sid,
# or KERNEL_IMAGE=path/to/bzImage [KERNEL_MODULES=path/to/lib/modules/VER].
KERNEL ?= 6.12
vmtest:
	KERNEL=$(KERNEL) ./hack/vmtest/run.sh

# The required kernels, checked against the README's table.
vmtest-all:
	./hack/vmtest/matrix.sh

# Only what needs no privileges.
test-unit:
	$(GO) test -count=1 ./control/... ./internal/packet/...

bench: bench-datapath bench-control bench-k8s bench-lab

bench-datapath: deps
	$(GO) test -run '^$$' -bench Ingress -benchtime 2000000x ./bpf/

bench-control: deps
	$(GO) test -run '^$$' -bench Control -benchtime 1x ./test/ -timeout 20m

# The agent against a real API server with 10,000 Services.
bench-k8s: deps
	$(GO) test -run '^$$' -bench K8s -benchtime 1x ./test/k8s/ -timeout 30m

bench-lab: deps
	$(GO) test -run '^$$' -bench Lab -benchtime 1x ./test/ -timeout 20m

# The lab: namespaces, demo backends, the agent, and traffic through it.
demo: deps build
	$(BIN) lab up --backends 3
	$(BIN) lab traffic --requests 30
	$(BIN) lb list --pin-dir /sys/fs/bpf/sluice-lab
	$(BIN) stats --pin-dir /sys/fs/bpf/sluice-lab
	@echo '--- the same service map through bpftool:'
	bpftool map dump pinned /sys/fs/bpf/sluice-lab/lb4_services | head -40
	@echo '--- the lab stays up; remove it with: make lab-down'

lab-down: build
	$(BIN) lab down

clean:
	rm -rf bin
