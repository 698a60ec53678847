package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nlbridge/bridge/internal/testenv"
	"github.com/nlbridge/bridge/nsutil"
)

// podman runs Podman 4.3 with the CNI backend. Every podman process (and
// the conmon and cleanup processes they start, which do not inherit the
// environment) runs in one private mount namespace whose /etc/containers
// is ours, inside the throwaway host namespace.
type podman struct {
	t      *testing.T
	holder *exec.Cmd // keeps the mount namespace
	dir    string
}

func startPodman(t *testing.T, host *nsutil.NS, confDir, network string) *podman {
	need(t, "podman")
	need(t, "conmon")
	need(t, "runc")
	dir, err := os.MkdirTemp("", "nlbt-podman-")
	if err != nil {
		t.Fatal(err)
	}
	etc := filepath.Join(dir, "etc")
	os.MkdirAll(etc, 0o755)
	files := map[string]string{
		"containers.conf": fmt.Sprintf(`[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[network]
network_backend = "cni"
cni_plugin_dirs = [%q]
network_config_dir = %q
default_network = %q
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
tmp_dir = %q
`, pluginPath(t), confDir, network, filepath.Join(dir, "tmp")),
		"storage.conf": fmt.Sprintf("[storage]\ndriver = \"overlay\"\nrunroot = %q\ngraphroot = %q\n",
			filepath.Join(dir, "run"), filepath.Join(dir, "graph")),
		"policy.json":     `{"default": [{"type": "insecureAcceptAnything"}]}`,
		"registries.conf": "",
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(etc, n), []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p := &podman{t: t, dir: dir}
	p.holder = exec.Command("nsenter", "--net="+host.Path(), "--", "unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", "mount --bind "+etc+" /etc/containers && echo ready && exec sleep 3600")
	p.holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, _ := p.holder.StdoutPipe()
	if err := p.holder.Start(); err != nil {
		t.Skipf("cannot make a mount namespace for podman: %v", err)
	}
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		p.holder.Process.Kill()
		p.holder.Wait()
		t.Skipf("cannot bind our /etc/containers for podman")
	}
	t.Cleanup(p.cleanup)
	rootfs := filepath.Join(dir, "rootfs.tar")
	os.WriteFile(rootfs, rootfsTar(t), 0o644)
	if out, err := p.run("import", rootfs, "localhost/busybox:latest"); err != nil {
		t.Skipf("podman cannot import an image here: %v\n%s", err, out)
	}
	return p
}

func (p *podman) run(args ...string) (string, error) {
	cmd := exec.Command("timeout", append([]string{"-s", "KILL", cmdTimeout, "nsenter", "-t", strconv.Itoa(p.holder.Process.Pid), "-m", "-n", "--", "podman"}, args...)...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (p *podman) must(args ...string) string {
	p.t.Helper()
	out, err := p.run(args...)
	if err != nil {
		p.t.Fatalf("podman %v: %v\n%s", args, err, out)
	}
	return out
}

func (p *podman) cleanup() {
	if out, err := p.run("rm", "-fa", "-t", "0"); err != nil {
		p.t.Logf("podman rm -fa: %v\n%s", err, out)
	}
	p.holder.Process.Kill() // the mount namespace and its mounts go with it
	p.holder.Wait()
	os.RemoveAll(p.dir)
}

// inspect returns the container's address and MAC on the network.
func (p *podman) inspect(id, network string) (netip.Addr, string) {
	p.t.Helper()
	var info []struct {
		NetworkSettings struct {
			Networks map[string]struct {
				IPAddress  string
				MacAddress string
			}
		}
	}
	if err := json.Unmarshal([]byte(p.must("inspect", id)), &info); err != nil || len(info) != 1 {
		p.t.Fatalf("podman inspect: %v", err)
	}
	n := info[0].NetworkSettings.Networks[network]
	a, err := netip.ParseAddr(n.IPAddress)
	if err != nil {
		p.t.Fatalf("container has no address on %s: %+v", network, info[0].NetworkSettings)
	}
	return a, n.MacAddress
}

// httpGet is the request the live tests send to a container's web server.
const httpGet = "GET / HTTP/1.0\r\n\r\n"

// waitHTTP polls until the published port answers (the server in the
// container starts after run returns).
func waitHTTP(t *testing.T, ns *nsutil.NS, ap netip.AddrPort) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		line, err := testenv.Exchange(ns, ap, httpGet, time.Second)
		if err == nil && strings.HasPrefix(line, "HTTP/") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("published port %s: %q %v", ap, line, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPodman: podman run with -p on our network (CNI backend); the port
// works from the host namespace; restart (DEL, then ADD) and network
// reload (DEL, then ADD with the old IP and MAC, which it keeps) keep the
// port working; rm leaves nothing.
func TestPodman(t *testing.T) {
	pluginPath(t)
	rootfsTar(t)
	host := testenv.NetNS(t, "podh")
	inNSOutput(t, host, "ip", "link", "set", "lo", "up")
	name, br := "nlbt-"+randHex(3), "nlbt"+randHex(3)
	confDir := confList(t, "1.0.0", name, nlbridgeConf(br, "10.84.0.0/24", ""))
	p := startPodman(t, host, confDir, name)
	gw := netip.MustParseAddr("10.84.0.1")

	// A first container takes the lowest address, so that the restart
	// below is only kept on its address by podman's IP= (after rm first,
	// the lowest free address is first's).
	first := p.must("run", "-d", "--network", name, "localhost/busybox:latest", "sleep", "3600")
	ipFirst, _ := p.inspect(first, name)
	id := p.must("run", "-d", "--network", name, "-p", "18110:80", "localhost/busybox:latest",
		"sh", "-c", "echo hello > /tmp/index.html && exec httpd -f -p 80 -h /tmp")
	ip, mac := p.inspect(id, name)
	published := netip.AddrPortFrom(gw, 18110)
	waitHTTP(t, host, published)
	if out := p.must("run", "--rm", "--network", name, "--cap-add", "NET_RAW", "localhost/busybox:latest", "ping", "-c1", "-W2", ip.String()); !strings.Contains(out, "1 packets received") {
		t.Errorf("third container -> second: %s", out)
	}
	p.must("rm", "-f", "-t", "0", first)

	// restart: DEL, then ADD in a new netns (podman 4.3 sends no IP= here:
	// the attachment is new, as with the reference plugins).
	p.must("restart", "-t", "0", id)
	ip, mac = p.inspect(id, name)
	waitHTTP(t, host, published)
	// network reload: DEL, then ADD with IP= and MAC= of the old
	// attachment, which keeps an address that is not the lowest free one
	// (first's, freed by its rm).
	p.must("network", "reload", id)
	ip2, mac2 := p.inspect(id, name)
	if ip2 != ip || mac2 != mac {
		t.Errorf("network reload changed the attachment: %s %s -> %s %s (the lowest free address was %s)", ip, mac, ip2, mac2, ipFirst)
	}
	waitHTTP(t, host, published)

	p.must("rm", "-f", "-t", "0", id)
	if _, err := testenv.Exchange(host, published, httpGet, 300*time.Millisecond); err == nil {
		t.Error("published port answers after rm")
	}
	onlyBridge(t, host, br)
	noConntrack(t, host, ip, ipFirst)
}
