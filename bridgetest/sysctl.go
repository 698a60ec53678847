package bridgetest

import (
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/nsutil"
)

// writeSysctl writes a net.* parameter. Per-device keys
// (net.ipv4.conf.IF.key, net.ipv6.conf.IF.key, and neigh) exist only while
// the device does; "all" and "default" always.
func (k *Kernel) writeSysctl(ns *netns, s nsutil.Sysctl) error {
	p, err := s.Path()
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	fail := func(errno syscall.Errno) error {
		return fmt.Errorf("sysctl %s=%s: %w", s.Key, s.Value, &os.PathError{Op: "open", Path: p, Err: errno})
	}
	errno := k.fault(ns, netlink.Message{}, s.Key)
	k.runHooks()
	if errno != 0 {
		return fail(errno)
	}
	parts := strings.Split(strings.TrimPrefix(p, "/proc/sys/net/"), "/")
	if len(parts) == 4 && (parts[1] == "conf" || parts[1] == "neigh") && parts[2] != "all" && parts[2] != "default" {
		l := ns.byName(parts[2])
		if l == nil {
			return fail(syscall.ENOENT)
		}
		l.sysctls[parts[0]+"."+parts[1]+"."+parts[3]] = s.Value
		return nil
	}
	ns.sysctls[s.Key] = s.Value
	return nil
}
