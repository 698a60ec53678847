// Package testenv gives live tests throwaway network namespaces, traffic
// between them, and checks that nothing was left behind. It is for tests
// only, and may start processes (iproute2 as an independent oracle).
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nlbridge/bridge/nsutil"
)

// Root skips the test unless it runs as root, which live tests need to
// create namespaces and devices.
func Root(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("live test: needs root to create network namespaces (run `make test` as root)")
	}
}

// NetNS creates a named namespace nlbt-<tag>-<random> under /run/netns and
// deletes it when the test ends. Everything made inside goes with it.
func NetNS(t testing.TB, tag string) *nsutil.NS {
	t.Helper()
	Root(t)
	b := make([]byte, 6) // thousands per run: keep birthday collisions away
	rand.Read(b)
	name := "nlbt-" + tag + "-" + hex.EncodeToString(b)
	ns, err := nsutil.Create("", name)
	if err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	id := ns.ID()
	t.Cleanup(func() {
		ns.Close()
		// A driver killed by a test leaves its namespace's lock file
		// (see the root package's hostLock); it goes with the namespace.
		os.Remove(fmt.Sprintf("/run/nlbridge/%x-%x.lock", id.Dev, id.Ino))
		if err := nsutil.Delete(ns.Path()); err != nil {
			t.Errorf("delete netns %s: %v", ns.Path(), err)
		}
	})
	return ns
}

// IP runs `ip -n <ns> args...` and returns its output; it fails the test
// on error.
func IP(t testing.TB, ns *nsutil.NS, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"-n", nsName(ns)}, args...)...)
}

// run runs cmd and returns its standard output; the test fails with both
// outputs if it fails. Warnings on standard error (iproute2 prints "Peer
// netns reference is invalid." for a veth whose peer's namespace it cannot
// name) stay out of what callers parse.
func run(t testing.TB, cmd string, args ...string) string {
	t.Helper()
	Oracle(t, cmd)
	var stderr strings.Builder
	c := exec.Command(cmd, args...)
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", cmd, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// Oracle skips the test, with the reason, unless the tool that serves
// as an independent oracle (ip, nft, conntrack) is installed.
func Oracle(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("live test: oracle %s not installed (`make deps` installs it): %v", tool, err)
		}
	}
}

func nsName(ns *nsutil.NS) string { return filepath.Base(ns.Path()) }

// Links lists the interface names in ns, as iproute2 sees them.
func Links(t testing.TB, ns *nsutil.NS) []string {
	t.Helper()
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(IP(t, ns, "-o", "link", "show")), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			names = append(names, name)
		}
	}
	return names
}

// OnlyLoopback fails the test unless ns holds no device but lo, and no
// address or route beyond what a fresh namespace has.
func OnlyLoopback(t testing.TB, ns *nsutil.NS) {
	t.Helper()
	if l := Links(t, ns); len(l) != 1 || l[0] != "lo" {
		t.Errorf("%s: devices left behind: %v", ns.Path(), l)
	}
	for _, fam := range []string{"-4", "-6"} {
		for _, r := range strings.Split(strings.TrimSpace(IP(t, ns, fam, "route", "show")), "\n") {
			if r != "" && !strings.Contains(r, " dev lo ") {
				t.Errorf("%s: route left behind: %s", ns.Path(), r)
			}
		}
	}
}

// NoNamespacesLeft fails the test if any nlbt-* namespace remains.
func NoNamespacesLeft(t testing.TB) {
	t.Helper()
	ents, _ := os.ReadDir(nsutil.DefaultNetNSDir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "nlbt-") {
			t.Errorf("netns left behind: %s", e.Name())
		}
	}
}
