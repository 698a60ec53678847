package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nlbridge/bridge/internal/testenv"
	"github.com/nlbridge/bridge/nsutil"
)

// Peers are exec-based tools doing the same workload as nlbridge's
// "nat+1port" attach: a veth on a bridge, an IPv4 address, masquerade and
// one published TCP port. `make bench-peers` installs them; without them
// these benchmarks skip. Each tool runs as a child forked from a thread
// inside the throwaway host namespace, so it touches only that namespace.

// peer attaches and detaches sandbox i on its network net (0 is measured,
// 1 holds the existing endpoints: a bridge takes at most 1,024 ports).
type peer interface {
	attach(host, sb *nsutil.NS, net, i int) error
	detach(host, sb *nsutil.NS, net, i int) error
}

// run starts cmd from a thread inside ns, feeding it stdin.
func run(ns *nsutil.NS, stdin []byte, env []string, name string, args ...string) ([]byte, error) {
	var out []byte
	err := ns.Do(func() error {
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdin = bytes.NewReader(stdin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		var err error
		if out, err = cmd.Output(); err != nil {
			return fmt.Errorf("%s %v: %v: %s %s", name, args, err, out, stderr.String())
		}
		return nil
	})
	return out, err
}

// cni drives the CNI bridge + host-local + portmap plugins (built by
// `make bench-peers` into $NLB_CNI_BIN) as a runtime would: bridge ADD,
// then portmap ADD with the bridge's result as prevResult; DEL in reverse.
type cni struct {
	bin, ipam string
	results   map[[2]int]json.RawMessage
}

// conf is the plugin's config for sandbox i of network net: cni<net> on
// 10.(97+2*net).0.0/16, host port 20000+10000*net+i.
func (c *cni) conf(typ string, net, i int, prev json.RawMessage) []byte {
	m := map[string]any{"cniVersion": "1.0.0", "name": fmt.Sprint("nlbpeer", net), "type": typ}
	switch typ {
	case "bridge":
		m["bridge"], m["isGateway"], m["ipMasq"] = fmt.Sprint("cni", net), true, true
		m["ipam"] = map[string]any{"type": "host-local", "dataDir": c.ipam,
			"ranges": [][]map[string]string{{{"subnet": fmt.Sprintf("10.%d.0.0/16", 97+2*net)}}},
			"routes": []map[string]string{{"dst": "0.0.0.0/0"}}}
	case "portmap":
		m["capabilities"], m["snat"] = map[string]bool{"portMappings": true}, true
		m["runtimeConfig"] = map[string]any{"portMappings": []map[string]any{{"hostPort": 20000 + 10000*net + i, "containerPort": 80, "protocol": "tcp"}}}
		m["prevResult"] = prev
	}
	b, _ := json.Marshal(m)
	return b
}

func (c *cni) exec(host, sb *nsutil.NS, cmd, typ string, net, i int, prev json.RawMessage) ([]byte, error) {
	env := []string{"CNI_COMMAND=" + cmd, fmt.Sprintf("CNI_CONTAINERID=c%d-%d", net, i), "CNI_NETNS=" + sb.Path(),
		"CNI_IFNAME=eth0", "CNI_PATH=" + c.bin}
	return run(host, c.conf(typ, net, i, prev), env, filepath.Join(c.bin, typ))
}

func (c *cni) attach(host, sb *nsutil.NS, net, i int) error {
	res, err := c.exec(host, sb, "ADD", "bridge", net, i, nil)
	if err != nil {
		return err
	}
	c.results[[2]int{net, i}] = res
	_, err = c.exec(host, sb, "ADD", "portmap", net, i, res)
	return err
}

func (c *cni) detach(host, sb *nsutil.NS, net, i int) error {
	res := c.results[[2]int{net, i}]
	if _, err := c.exec(host, sb, "DEL", "portmap", net, i, res); err != nil {
		return err
	}
	_, err := c.exec(host, sb, "DEL", "bridge", net, i, res)
	return err
}

// netavark drives Podman's netavark (Debian package) with one bridge
// network, a static address and one port mapping per sandbox.
type netavark struct{ bin, config string }

// conf is the options for sandbox i of network net: nlbnv<net> on
// 10.(98+2*net).0.0/16, host port 20000+10000*net+i.
func (n *netavark) conf(net, i int) []byte {
	name := fmt.Sprint("nlbnv", net)
	b, _ := json.Marshal(map[string]any{
		"container_id": fmt.Sprintf("%064x", net<<20+i+1), "container_name": fmt.Sprintf("c%d-%d", net, i),
		"networks": map[string]any{name: map[string]any{"interface_name": "eth0",
			"static_ips": []string{fmt.Sprintf("10.%d.%d.%d", 98+2*net, 1+i/250, 1+i%250)}}},
		"network_info": map[string]any{name: map[string]any{"name": name, "id": fmt.Sprintf("%064x", 0xbeef+net),
			"driver": "bridge", "network_interface": name,
			"subnets":      []map[string]string{{"subnet": fmt.Sprintf("10.%d.0.0/16", 98+2*net), "gateway": fmt.Sprintf("10.%d.0.1", 98+2*net)}},
			"ipv6_enabled": false, "internal": false, "dns_enabled": false}},
		"port_mappings": []map[string]any{{"host_ip": "", "container_port": 80, "host_port": 20000 + 10000*net + i, "range": 1, "protocol": "tcp"}},
	})
	return b
}

func (n *netavark) attach(host, sb *nsutil.NS, net, i int) error {
	_, err := run(host, n.conf(net, i), nil, n.bin, "--config", n.config, "setup", sb.Path())
	return err
}

func (n *netavark) detach(host, sb *nsutil.NS, net, i int) error {
	_, err := run(host, n.conf(net, i), nil, n.bin, "--config", n.config, "teardown", sb.Path())
	return err
}

// peers returns the installed peers by name.
func peers(b *testing.B) map[string]peer {
	out := map[string]peer{}
	if bin := os.Getenv("NLB_CNI_BIN"); bin != "" {
		if _, err := os.Stat(filepath.Join(bin, "portmap")); err == nil {
			out["cni"] = &cni{bin: bin, ipam: b.TempDir(), results: map[[2]int]json.RawMessage{}}
		}
		if _, err := os.Stat(filepath.Join(bin, "nlbridge")); err == nil {
			out["nlbridge-cni"] = &nlbCNI{bin: bin, results: map[[2]int]json.RawMessage{}}
		}
	}
	for _, p := range []string{"/usr/lib/podman/netavark", "/usr/libexec/podman/netavark"} {
		if _, err := os.Stat(p); err == nil {
			out["netavark"] = &netavark{bin: p, config: b.TempDir()}
			break
		}
	}
	return out
}

// BenchmarkPeerAttach times attach and detach of the exec-based peers on
// the nat+1port workload, with existing endpoints (up to 1,000) made by
// the peer itself on a second network.
func BenchmarkPeerAttach(parent *testing.B) {
	testenv.Root(parent)
	for _, name := range []string{"cni", "nlbridge-cni", "netavark"} {
		for _, existing := range scales() {
			parent.Run(fmt.Sprintf("tool=%s/mode=nat+1port/existing=%d", name, existing), func(b *testing.B) {
				if existing > 1000 {
					b.Skip("peers are measured up to 1,000 existing endpoints (1,000 take a CNI run ~4 minutes)")
				}
				if b.N > 1000 {
					b.Skip("address plan holds 1,000 endpoints")
				}
				w := newPeerWorld(parent, b, b.Name(), name, existing)
				sbs := sandboxes(b, b.N)
				var att, det latencies
				b.ResetTimer()
				for i := range b.N {
					t0 := time.Now()
					if err := w.p.attach(w.host, sbs[i], 0, i); err != nil {
						b.Fatal(err)
					}
					att = append(att, time.Since(t0))
				}
				b.StopTimer()
				for i := range b.N {
					t0 := time.Now()
					if err := w.p.detach(w.host, sbs[i], 0, i); err != nil {
						b.Fatal(err)
					}
					det = append(det, time.Since(t0))
				}
				att.report(b, "attach")
				det.report(b, "detach")
			})
		}
	}
}

// peerWorld is a host namespace for one peer, with existing endpoints.
type peerWorld struct {
	p    peer
	host *nsutil.NS
}

var peerWorlds = map[string]*peerWorld{}

// newPeerWorld returns the peer's world for the sub-benchmark key, built on
// first use (its b.N runs share it) and removed when parent ends.
func newPeerWorld(parent, b *testing.B, key, name string, existing int) *peerWorld {
	if w, ok := peerWorlds[key]; ok {
		return w
	}
	p, ok := peers(parent)[name]
	if !ok {
		b.Skipf("%s not installed (make bench-peers installs it)", name)
	}
	if current != nil { // an nlbridge world's namespaces would skew the peer's
		current.close()
	}
	w := &peerWorld{p: p, host: testenv.NetNS(parent, "peerhost")}
	parent.Cleanup(func() { delete(peerWorlds, key) })
	if err := w.host.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0) }); err != nil {
		b.Fatal(err)
	}
	for i, sb := range sandboxes(parent, existing) {
		if err := p.attach(w.host, sb, 1, i); err != nil {
			b.Fatal(err)
		}
	}
	peerWorlds[key] = w
	settle(b)
	return w
}
