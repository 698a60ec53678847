# nlbridge: `make demo` runs the main job, `make test` runs every test.
# Both need root (they create network namespaces) and touch nothing outside
# the namespaces they create.
GO ?= go
export GOFLAGS := -buildvcs=false

.PHONY: demo test unit deps cni-deps vet bench bench-peers cni

# deps installs what the tests use as independent oracles (iproute2, nft,
# conntrack).
deps:
	@command -v ip >/dev/null && command -v nft >/dev/null && command -v conntrack >/dev/null || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y iproute2 nftables conntrack)

vet:
	$(GO) vet ./...

demo: deps
	$(GO) run ./cmd/nlbridge-demo

# cni-deps installs the real CNI clients the CNI plugin's live tests drive
# (containerd 1.6 + crictl, Podman 4.3, cnitool) and the reference plugins.
# A policy-rc.d stops the packages from starting daemons in the machine's
# own namespace. The Go tools go to .tools/bin, which the tests find on PATH.
TOOLS := $(CURDIR)/.tools/bin
export PATH := $(TOOLS):$(PATH)
CNI_PKGS := containerd runc podman conmon containernetworking-plugins busybox-static iptables
cni-deps:
	@if [ "$$(id -u)" = 0 ]; then \
		dpkg -s $(CNI_PKGS) >/dev/null 2>&1 || { \
			test -e /usr/sbin/policy-rc.d || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }; \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $(CNI_PKGS); }; \
	fi
	@test -x $(TOOLS)/crictl || GOBIN=$(TOOLS) $(GO) install sigs.k8s.io/cri-tools/cmd/crictl@v1.34.0
	@test -x $(TOOLS)/cnitool || GOBIN=$(TOOLS) $(GO) install github.com/containernetworking/cni/cnitool@v1.3.0

# cni builds the CNI plugin as $(CNI_BIN_DIR)/nlbridge.
CNI_BIN_DIR ?= /opt/cni/bin
cni:
	mkdir -p $(CNI_BIN_DIR)
	$(GO) build -o $(CNI_BIN_DIR)/nlbridge ./cmd/nlbridge-cni

# test runs unit tests and (as root) live tests in throwaway namespaces,
# then every package's tests again without root (unit).
test: deps cni-deps vet
	$(GO) test -race -count=1 ./...
	$(MAKE) unit

# unit runs every package's tests without root: as root it builds each
# test binary and runs it as nobody (setpriv), so the live tests skip with
# their reason and only the unit tests run (fake conns, bridgetest). Each
# package's coverage of its own statements is printed. The binaries run in
# a copy of the tree that nobody can read (for testdata/), whatever the
# checkout's permissions.
UNIT_TMP ?= /tmp/nlbridge-unit
unit:
	@if [ "$$(id -u)" != 0 ]; then exec $(GO) test -race -count=1 -cover ./...; fi; \
	rm -rf $(UNIT_TMP) && mkdir -p $(UNIT_TMP)/src && chmod 1777 $(UNIT_TMP) || exit 1; \
	tar -C $(CURDIR) --exclude=./.git --exclude=./.tools --exclude=./bench/.peers -cf - . | tar -C $(UNIT_TMP)/src -xf - && \
		chmod -R a+rX $(UNIT_TMP)/src || exit 1; \
	for p in $$($(GO) list ./...); do \
		b=$(UNIT_TMP)/$$(echo $$p | tr / _).test; \
		$(GO) test -race -cover -c -o $$b $$p >/dev/null || exit 1; \
		[ -f $$b ] || continue; \
		chmod a+rx $$b; \
		dir=$$($(GO) list -f '{{.Dir}}' $$p); \
		out=$$(cd $(UNIT_TMP)/src$${dir#$(CURDIR)} && setpriv --reuid=nobody --regid=nogroup --clear-groups \
			env HOME=$(UNIT_TMP) $$b -test.count=1 2>&1) || { echo "$$out"; echo "FAIL $$p (without root)"; exit 1; }; \
		echo "ok   $$p (without root) $$(echo "$$out" | grep -o 'coverage: .*')"; \
	done

# bench runs the endpoint-churn benchmarks (bench/ is its own module), as
# root, in throwaway namespaces. NLB_BENCH_SCALES=0,1000 limits the scale
# points (default 0,1000,5000).
bench: deps
	@command -v strace >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y strace)
	cd bench && $(GO) test -run '^$$' -bench . -benchtime 200x -timeout 60m .

# bench-peers also runs the exec-based peers on the same workload (NAT and
# one published port): the CNI bridge + host-local + portmap plugins
# v1.9.1, built from the Go module proxy, and netavark (Debian package).
PEERS := $(CURDIR)/bench/.peers/bin
bench-peers: deps
	@command -v iptables >/dev/null && test -x /usr/lib/podman/netavark || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y iptables netavark)
	GOBIN=$(PEERS) $(GO) install github.com/containernetworking/plugins/plugins/main/bridge@v1.9.1 \
		github.com/containernetworking/plugins/plugins/ipam/host-local@v1.9.1 \
		github.com/containernetworking/plugins/plugins/meta/portmap@v1.9.1
	$(MAKE) cni CNI_BIN_DIR=$(PEERS)
	cd bench && NLB_CNI_BIN=$(PEERS) NLB_BENCH_SCALES=0,1000 $(GO) test -run '^$$' \
		-bench 'PeerAttach|Attach/mode=nat|BaselineAttach|Detach' -benchtime 50x -timeout 60m .
