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

// peer attaches and detaches sandbox i.
type peer interface {
	attach(host, sb *nsutil.NS, i int) error
	detach(host, sb *nsutil.NS, i int) error
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
	results   map[int]json.RawMessage
}

func (c *cni) conf(typ string, i int, prev json.RawMessage) []byte {
	m := map[string]any{"cniVersion": "1.0.0", "name": "nlbpeer", "type": typ}
	switch typ {
	case "bridge":
		m["bridge"], m["isGateway"], m["ipMasq"] = "cni0", true, true
		m["ipam"] = map[string]any{"type": "host-local", "dataDir": c.ipam,
			"ranges": [][]map[string]string{{{"subnet": "10.97.0.0/16"}}}, "routes": []map[string]string{{"dst": "0.0.0.0/0"}}}
	case "portmap":
		m["capabilities"], m["snat"] = map[string]bool{"portMappings": true}, true
		m["runtimeConfig"] = map[string]any{"portMappings": []map[string]any{{"hostPort": 20000 + i, "containerPort": 80, "protocol": "tcp"}}}
		m["prevResult"] = prev
	}
	b, _ := json.Marshal(m)
	return b
}

func (c *cni) exec(host, sb *nsutil.NS, cmd, typ string, i int, prev json.RawMessage) ([]byte, error) {
	env := []string{"CNI_COMMAND=" + cmd, fmt.Sprintf("CNI_CONTAINERID=c%d", i), "CNI_NETNS=" + sb.Path(),
		"CNI_IFNAME=eth0", "CNI_PATH=" + c.bin}
	return run(host, c.conf(typ, i, prev), env, filepath.Join(c.bin, typ))
}

func (c *cni) attach(host, sb *nsutil.NS, i int) error {
	res, err := c.exec(host, sb, "ADD", "bridge", i, nil)
	if err != nil {
		return err
	}
	c.results[i] = res
	_, err = c.exec(host, sb, "ADD", "portmap", i, res)
	return err
}

func (c *cni) detach(host, sb *nsutil.NS, i int) error {
	if _, err := c.exec(host, sb, "DEL", "portmap", i, c.results[i]); err != nil {
		return err
	}
	_, err := c.exec(host, sb, "DEL", "bridge", i, c.results[i])
	return err
}

// netavark drives Podman's netavark (Debian package) with one bridge
// network, a static address and one port mapping per sandbox.
type netavark struct{ bin, config string }

func (n *netavark) conf(i int) []byte {
	b, _ := json.Marshal(map[string]any{
		"container_id": fmt.Sprintf("%064x", i+1), "container_name": fmt.Sprintf("c%d", i),
		"networks": map[string]any{"nlbnv": map[string]any{"interface_name": "eth0",
			"static_ips": []string{fmt.Sprintf("10.98.%d.%d", 1+i/250, 1+i%250)}}},
		"network_info": map[string]any{"nlbnv": map[string]any{"name": "nlbnv", "id": fmt.Sprintf("%064x", 0xbeef),
			"driver": "bridge", "network_interface": "nlbnv0",
			"subnets":      []map[string]string{{"subnet": "10.98.0.0/16", "gateway": "10.98.0.1"}},
			"ipv6_enabled": false, "internal": false, "dns_enabled": false}},
		"port_mappings": []map[string]any{{"host_ip": "", "container_port": 80, "host_port": 20000 + i, "range": 1, "protocol": "tcp"}},
	})
	return b
}

func (n *netavark) attach(host, sb *nsutil.NS, i int) error {
	_, err := run(host, n.conf(i), nil, n.bin, "--config", n.config, "setup", sb.Path())
	return err
}

func (n *netavark) detach(host, sb *nsutil.NS, i int) error {
	_, err := run(host, n.conf(i), nil, n.bin, "--config", n.config, "teardown", sb.Path())
	return err
}

// peers returns the installed peers by name.
func peers(b *testing.B) map[string]peer {
	out := map[string]peer{}
	if bin := os.Getenv("NLB_CNI_BIN"); bin != "" {
		if _, err := os.Stat(filepath.Join(bin, "portmap")); err == nil {
			out["cni"] = &cni{bin: bin, ipam: b.TempDir(), results: map[int]json.RawMessage{}}
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
// the nat+1port workload, in a fresh host namespace per run.
func BenchmarkPeerAttach(parent *testing.B) {
	testenv.Root(parent)
	for _, name := range []string{"cni", "netavark"} {
		parent.Run("tool="+name+"/mode=nat+1port/existing=0", func(b *testing.B) {
			p, ok := peers(b)[name]
			if !ok {
				b.Skipf("%s not installed (make bench-peers installs it)", name)
			}
			if b.N > 1000 {
				b.Skip("address plan holds 1,000 endpoints")
			}
			host := testenv.NetNS(b, "peerhost")
			if err := host.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0) }); err != nil {
				b.Fatal(err)
			}
			sbs := sandboxes(b, b.N)
			var att, det latencies
			b.ResetTimer()
			for i := range b.N {
				t0 := time.Now()
				if err := p.attach(host, sbs[i], i); err != nil {
					b.Fatal(err)
				}
				att = append(att, time.Since(t0))
			}
			b.StopTimer()
			for i := range b.N {
				t0 := time.Now()
				if err := p.detach(host, sbs[i], i); err != nil {
					b.Fatal(err)
				}
				det = append(det, time.Since(t0))
			}
			att.report(b, "attach")
			det.report(b, "detach")
		})
	}
}
