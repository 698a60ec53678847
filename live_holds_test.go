package bridge_test

import (
	"errors"
	"testing"

	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestLiveNoPortHolds: after the process that published tcp 18081 died, a
// driver opened with NoPortHolds still refuses that host port to a new
// attach, but binds no socket for it (a host process can bind the port);
// a default driver holds it again.
func TestLiveNoPortHolds(t *testing.T) {
	host, _ := stateEnv(t)
	sb, sb2 := testenv.NetNS(t, "sb"), testenv.NetNS(t, "sb2")
	kill(t, child(t, "hold", host, sb)) // its endpoint stays in the kernel
	port := []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 18081, ContainerPort: 80}}
	// bindable reports whether a host socket can bind tcp 0.0.0.0:18081.
	bindable := func() bool {
		ok := false
		host.Do(func() error {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			ok = unix.Bind(fd, &unix.SockaddrInet4{Port: 18081}) == nil
			return nil
		})
		return ok
	}
	for _, noHolds := range []bool{true, false} {
		d, err := bridge.Open(ctx, bridge.Options{NetNS: host.Path(), NoPortHolds: noHolds})
		if err != nil {
			t.Fatal(err)
		}
		n, err := d.CreateNetwork(ctx, stateNet)
		if err != nil {
			t.Fatal(err)
		}
		_, err = n.Attach(ctx, bridge.EndpointConfig{ID: "other", NetNS: sb2.Path(), Ports: port})
		if !errors.Is(err, bridge.ErrConflict) {
			t.Errorf("NoPortHolds=%v: attach publishing the recovered endpoint's port: %v, want ErrConflict", noHolds, err)
		}
		if got := bindable(); got != noHolds {
			t.Errorf("NoPortHolds=%v: host can bind the port = %v, want %v", noHolds, got, noHolds)
		}
		if !noHolds {
			if err := n.Delete(ctx); err != nil {
				t.Fatal(err)
			}
		}
		d.Close()
	}
}
