package nat_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/bridgetest"
	"github.com/nlbridge/bridge/nat"
	"golang.org/x/sys/unix"
)

// A call's ctx reaches the socket: a batch that the kernel holds up ends
// at the deadline with an error matching both the ctx's and the socket's,
// and the firewall dials a new socket, so the next call does not read the
// held batch's late answers as its own.
func TestDeadlineReachesTheSocket(t *testing.T) {
	k := bridgetest.New()
	ns, err := k.System().OpenNS("")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	dials := 0
	f, err := nat.New("t", func() (*nftables.Conn, *netlink.Conn, error) {
		dials++
		return ns.NFTables()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Rebuild(ctx, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	p := nat.Port{Proto: unix.IPPROTO_TCP, HostIP: netip.IPv4Unspecified(), HostPort: 8080, Addr: netip.MustParseAddr("10.0.0.2"), Port: 80}

	hit, release := make(chan struct{}), make(chan struct{})
	k.FailNext(bridgetest.Fault{Type: unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWSETELEM, Errno: unix.EINTR,
		Hook: func() { close(hit); <-release }})
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	err = f.AddPorts(short, p)
	cancel()
	<-hit
	close(release)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("held batch: %v", err)
	}
	if dials != 2 {
		t.Errorf("%d dials, want 2 (the socket of the cut-short call is replaced)", dials)
	}
	if err := f.AddPorts(ctx, p); err != nil { // the held batch was refused
		t.Fatal(err)
	}
	got, err := f.Ports(ctx)
	if err != nil || len(got) != 1 || got[0] != p {
		t.Fatalf("ports %v, %v; want %v", got, err, p)
	}
	if dials != 2 {
		t.Errorf("%d dials after calls that went through, want 2", dials)
	}
}
