package bridge_test

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/bridgetest"
	"golang.org/x/sys/unix"
)

// A Delete of the network that lands after an attach's commit, while the
// attach finishes outside the host lock: the group delete takes the new
// endpoint's links, and the attach then cuts off what is left of it
// (ports, guard, announcements, holds) and fails with ErrClosed.
//
// The window has no request of its own. The attach's last request is its
// first announcement's check of the sandbox interface (an RTM_GETLINK in
// the sandbox, the attach's only one); a hook there, which runs before the
// request is applied and with the host lock free, deletes the network.
// The announcement then fails, so the others are left to a goroutine,
// which the cut-off must stop.
func TestFakeAttachRacesDelete(t *testing.T) {
	f := newFake(t, bridge.Options{})
	box := f.sandbox("c1")
	before := f.k.Dump()
	n := f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	cfg := bridge.EndpointConfig{NetNS: box, ID: "c1", Advertise: &bridge.Advertise{Count: 3, Interval: 2 * time.Second},
		Ports: []bridge.PortMapping{{Proto: bridge.TCP, HostPort: 8080, ContainerPort: 80}}}

	deleted := make(chan error, 1)
	byIndex := func(m netlink.Message) bool { return m.Header.Flags&netlink.Dump == 0 }
	f.k.FailNext(bridgetest.Fault{Type: unix.RTM_GETLINK, NetNS: box, Match: byIndex, Hook: func() {
		deleted <- n.Delete(f.ctx)
	}})
	e, err := n.Attach(f.ctx, cfg)
	select {
	case derr := <-deleted:
		if derr != nil {
			t.Fatalf("delete: %v", derr)
		}
	default:
		t.Fatalf("the attach sent no announcement: %v, %v", e, err)
	}
	isErr(t, err, bridge.ErrClosed)
	if e != nil {
		t.Errorf("endpoint %v", e)
	}
	if eps := n.Endpoints(); len(eps) != 0 {
		t.Errorf("endpoints %v", eps)
	}
	// Nothing of the endpoint or the network is left: no veth, no
	// firewall element, no bound port, and no announcement after the
	// failed first one.
	same(t, "after the attach", noResidue(f.settled()), noResidue(before))
	// The announcer's goroutine, left to send the three announcements
	// every 2 s, would give up at its first (the interface is gone): it
	// must stop well before.
	for deadline := time.Now().Add(time.Second); announcers() > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the announcements did not stop")
		}
	}
	if a := f.k.Announcements(box); len(a) != 0 {
		t.Errorf("announcements %v", a)
	}
	// The ID, the address and the host port are free for a network of the
	// same name.
	n = f.network(bridge.NetworkConfig{Name: "br0", IPv4: v4net})
	cfg.Advertise = nil
	f.attach(n, cfg)
}

// announcers counts the goroutines of endpoints' announcements.
func announcers() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "github.com/nlbridge/bridge.(*Endpoint).advertise.func")
}
