package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nlbridge/bridge/internal/testenv"
	"github.com/nlbridge/bridge/nsutil"
)

// containerd is a containerd 1.6 daemon with the CRI plugin, inside a
// throwaway host namespace, configured as shared/CLIENTS.md says.
type containerd struct {
	t         *testing.T
	host      *nsutil.NS
	dir       string
	sock      string
	cfg       string
	crictlBin string
	cmd       *exec.Cmd
}

func startContainerd(t *testing.T, host *nsutil.NS, confDir string) *containerd {
	need(t, "containerd")
	need(t, "runc")
	crictl := need(t, "crictl")
	dir, err := os.MkdirTemp("", "nlbt-containerd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &containerd{t: t, host: host, dir: dir, sock: filepath.Join(dir, "containerd.sock"),
		cfg: filepath.Join(dir, "config.toml"), crictlBin: crictl}
	toml := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:latest"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[6]q
    conf_dir = %[7]q
    max_conf_num = 1
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc", filepath.Join(dir, "opt"),
		pluginPath(t), confDir)
	if err := os.WriteFile(c.cfg, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	crictlYAML := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n", c.sock, c.sock)
	if err := os.WriteFile(filepath.Join(dir, "crictl.yaml"), []byte(crictlYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	c.start()
	t.Cleanup(c.cleanup)
	img := ociImage(t, dir, "localhost/pause:latest", []string{"/bin/sleep", "2147483647"})
	out, err := inNS(host, nil, "ctr", "--address", c.sock, "-n", "k8s.io", "image", "import", img).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr image import: %v\n%s", err, out)
	}
	return c
}

func (c *containerd) start() {
	c.t.Helper()
	log, err := os.OpenFile(filepath.Join(c.dir, "containerd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	c.cmd = daemonInNS(c.host, "containerd", "--config", c.cfg)
	c.cmd.Stdout, c.cmd.Stderr = log, log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		c.t.Skipf("containerd cannot start: %v", err)
	}
	log.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := c.crictlRun("version"); err == nil {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
			c.stop(syscall.SIGKILL)
			c.t.Skipf("containerd did not come up in 20 s; log:\n%s", tail(string(b), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the daemon (its shims and pods stay, as in a restart).
func (c *containerd) stop(sig syscall.Signal) {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	c.cmd.Process.Signal(sig)
	c.cmd.Wait()
	c.cmd = nil
}

func (c *containerd) cleanup() {
	if c.cmd != nil {
		if out, err := c.crictlRun("rmp", "-fa"); err != nil {
			c.t.Logf("crictl rmp -fa: %v %s", err, out)
		}
		c.stop(syscall.SIGTERM)
	}
	// Shims of pods that are gone exit by themselves; overlay mounts of
	// removed pods are gone. Anything still mounted under dir stays.
	exec.Command("umount", "-R", filepath.Join(c.dir, "state")).Run()
	os.RemoveAll(c.dir)
}

// crictlRun runs crictl against the daemon and returns its stdout (its
// stderr, warnings included, goes into the error).
func (c *containerd) crictlRun(args ...string) (string, error) {
	full := append([]string{"--config", filepath.Join(c.dir, "crictl.yaml"), "--timeout", "30s"}, args...)
	cmd := inNS(c.host, nil, c.crictlBin, full...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%v: %s", err, stderr.String())
	}
	return string(out), nil
}

func (c *containerd) crictl(args ...string) string {
	c.t.Helper()
	out, err := c.crictlRun(args...)
	if err != nil {
		b, _ := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
		c.t.Fatalf("crictl %v: %v\n%s\ncontainerd log:\n%s", args, err, out, tail(string(b), 4000))
	}
	return strings.TrimSpace(out)
}

// runp starts a pod publishing hostPort (0 = none) and returns its ID,
// address and netns path.
func (c *containerd) runp(name string, hostPort int) (string, netip.Addr, string) {
	c.t.Helper()
	pod := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": name + "-uid", "attempt": 0},
		"log_directory": filepath.Join(c.dir, "logs", name),
		"linux":         map[string]any{},
	}
	if hostPort != 0 {
		pod["port_mappings"] = []any{map[string]any{"container_port": 80, "host_port": hostPort}}
	}
	b, _ := json.Marshal(pod)
	p := filepath.Join(c.dir, name+".json")
	os.WriteFile(p, b, 0o644)
	id := c.crictl("runp", p)
	var st struct {
		Status struct {
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
		Info struct {
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct {
						Type string `json:"type"`
						Path string `json:"path"`
					} `json:"namespaces"`
				} `json:"linux"`
			} `json:"runtimeSpec"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(c.crictl("inspectp", id)), &st); err != nil {
		c.t.Fatalf("inspectp: %v", err)
	}
	ip, err := netip.ParseAddr(st.Status.Network.IP)
	if err != nil {
		c.t.Fatalf("pod %s has no address: %q", name, st.Status.Network.IP)
	}
	var netns string
	for _, n := range st.Info.RuntimeSpec.Linux.Namespaces {
		if n.Type == "network" {
			netns = n.Path
		}
	}
	return id, ip, netns
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestContainerd: containerd 1.6 CRI + crictl. runp gives pods addresses
// that reach the gateway and each other; a published port is reachable
// from the host namespace; the daemon is restarted between ADD and DEL;
// stopp then rmp (DEL again without netns) leave nothing.
func TestContainerd(t *testing.T) {
	pluginPath(t)
	rootfsTar(t)
	host := testenv.NetNS(t, "ctrd")
	inNSOutput(t, host, "ip", "link", "set", "lo", "up")
	name, br := "nlbt-"+randHex(3), "nlbt"+randHex(3)
	confDir := confList(t, "1.0.0", name, nlbridgeConf(br, "10.83.0.0/24", ""))
	c := startContainerd(t, host, confDir)
	gw := netip.MustParseAddr("10.83.0.1")

	id1, ip1, ns1 := c.runp("p1", 18100)
	id2, ip2, ns2 := c.runp("p2", 0)
	if ip1 == ip2 || !netip.MustParsePrefix("10.83.0.0/24").Contains(ip1) {
		t.Fatalf("pod addresses %s %s", ip1, ip2)
	}
	pod1, err := nsutil.Open(ns1)
	if err != nil {
		t.Fatal(err)
	}
	defer pod1.Close()
	if err := testenv.Ping(pod1, gw, 2*time.Second); err != nil {
		t.Errorf("pod -> gateway: %v", err)
	}
	if err := testenv.Ping(pod1, ip2, 2*time.Second); err != nil {
		t.Errorf("pod -> second pod: %v", err)
	}
	testenv.Listen(t, pod1, netip.AddrPortFrom(netip.IPv4Unspecified(), 80))
	published := netip.AddrPortFrom(gw, 18100)
	if _, err := testenv.Dial(host, published, 2*time.Second); err != nil {
		t.Errorf("host -> published port %s: %v", published, err)
	}

	// Restart the daemon between ADD and DEL: nothing changes.
	c.stop(syscall.SIGKILL)
	if _, err := testenv.Dial(host, published, 2*time.Second); err != nil {
		t.Errorf("published port while containerd is down: %v", err)
	}
	c.start()
	if _, err := testenv.Dial(host, published, 2*time.Second); err != nil {
		t.Errorf("published port after the restart: %v", err)
	}

	for _, id := range []string{id1, id2} {
		c.crictl("stopp", id)
	}
	if _, err := testenv.Dial(host, published, 300*time.Millisecond); err == nil {
		t.Error("published port still answers after stopp")
	}
	for _, id := range []string{id1, id2} {
		c.crictl("rmp", id)
	}
	onlyBridge(t, host, br)
	noConntrack(t, host, ip1, ip2)
	for _, p := range []string{ns1, ns2} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("pod netns %s still exists", p)
		}
	}
}
