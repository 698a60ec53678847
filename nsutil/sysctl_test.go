package nsutil_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/nlbridge/bridge/nsutil"
)

func TestParseSysctl(t *testing.T) {
	for _, tc := range []struct{ in, path, value string }{
		{"net.ipv4.conf.eth0.arp_notify=1", "/proc/sys/net/ipv4/conf/eth0/arp_notify", "1"},
		{"net.ipv4.ip_forward = 1", "/proc/sys/net/ipv4/ip_forward", "1"},
		{"net.ipv6.conf.eth0/100.disable_ipv6=1", "/proc/sys/net/ipv6/conf/eth0.100/disable_ipv6", "1"},
	} {
		s, err := nsutil.ParseSysctl(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if p, _ := s.Path(); p != tc.path || s.Value != tc.value {
			t.Errorf("%q: path %q value %q, want %q %q", tc.in, p, s.Value, tc.path, tc.value)
		}
	}
	for _, in := range []string{
		"net.ipv4.conf.eth0.arp_notify", // no value
		"kernel.panic=1",                // not net.*
		"net.ipv4..x=1",
		"net.ipv4.conf.../x=1",
		"net.ipv4.conf./..x=1",
		"net.ipv4.conf.a b.x=1",
		"net=1",
		"net.ipv4.x=1\n2",
	} {
		if _, err := nsutil.ParseSysctl(in); !errors.Is(err, nsutil.ErrBadSysctl) {
			t.Errorf("%q: err = %v, want ErrBadSysctl", in, err)
		}
	}
}

// FuzzSysctlPath checks that no key maps outside /proc/sys/net.
func FuzzSysctlPath(f *testing.F) {
	for _, s := range []string{"net.ipv4.conf.eth0.arp_notify", "net.ipv4.conf.../x", "net./../../etc.x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		p, err := nsutil.Sysctl{Key: key}.Path()
		if err != nil {
			return
		}
		if !strings.HasPrefix(p, "/proc/sys/net/") {
			t.Fatalf("%q -> %q", key, p)
		}
		for _, part := range strings.Split(p, "/")[1:] {
			if part == "" || part == "." || part == ".." {
				t.Fatalf("%q -> %q has component %q", key, p, part)
			}
		}
	})
}
