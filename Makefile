# nlbridge: `make demo` runs the main job, `make test` runs every test.
# Both need root (they create network namespaces) and touch nothing outside
# the namespaces they create.
GO ?= go
export GOFLAGS := -buildvcs=false

.PHONY: demo test deps vet bench bench-peers

# deps installs what the tests use as independent oracles (iproute2, nft,
# conntrack).
deps:
	@command -v ip >/dev/null && command -v nft >/dev/null && command -v conntrack >/dev/null || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y iproute2 nftables conntrack)

vet:
	$(GO) vet ./...

demo: deps
	$(GO) run ./cmd/nlbridge-demo

# test runs unit tests and (as root) live tests in throwaway namespaces.
test: deps vet
	$(GO) test -race -count=1 ./...

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
	cd bench && NLB_CNI_BIN=$(PEERS) NLB_BENCH_SCALES=0,1000 $(GO) test -run '^$$' \
		-bench 'PeerAttach|Attach/mode=nat|BaselineAttach|Detach' -benchtime 50x -timeout 60m .
