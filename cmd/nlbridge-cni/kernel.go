package main

// The plugin's own kernel reads and changes, beyond what the library does:
// each takes the conn of the namespace it works in, so unit tests can
// assert its messages.

import (
	"fmt"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/addr"
	"github.com/nlbridge/bridge/internal/nl"
	"github.com/nlbridge/bridge/link"
	"github.com/nlbridge/bridge/nsutil"
	"github.com/nlbridge/bridge/route"
	"golang.org/x/sys/unix"
)

// promiscMsg puts the bridge in promiscuous mode (the reference plugin's
// promiscMode, which containerd's default conflist sets); sending it again
// is harmless.
func promiscMsg(index uint32) netlink.Message {
	b, _ := (&rtnetlink.LinkMessage{Index: index, Flags: unix.IFF_PROMISC, Change: unix.IFF_PROMISC}).MarshalBinary()
	return netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWLINK, Flags: nl.Change}, Data: b}
}

// describe is the endpoint as a result shows it, with the MACs of the
// bridge and the host end read from the host namespace.
func describe(host *netlink.Conn, n *bridge.Network, e *bridge.Endpoint) (attachment, error) {
	a := attachment{bridge: n.Config().Name, hostName: e.HostIfName(), mac: e.MAC(), ifName: e.IfName(),
		netns: e.NetNS(), v4: e.IPv4(), v6: e.IPv6(), gw4: n.Config().IPv4.Addr(), gw6: n.Config().IPv6.Addr()}
	br, err := link.GetIndex(host, n.BridgeIndex())
	if err != nil {
		return a, fmt.Errorf("read bridge %s: %w", a.bridge, err)
	}
	h, err := link.GetIndex(host, e.HostIfIndex())
	if err != nil {
		return a, fmt.Errorf("read host end %s: %w", a.hostName, err)
	}
	a.bridgeMAC, a.hostMAC = br.MAC, h.MAC
	return a, nil
}

// inSandbox runs fn with a route conn inside the namespace at path.
func inSandbox(path string, fn func(*netlink.Conn) error) error {
	ns, err := nsutil.Open(path)
	if err != nil {
		return err
	}
	defer ns.Close()
	c, err := ns.Dial(unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
}

// addRoutes adds routes out of the sandbox interface ifName, in one
// request after the lookup of the interface.
func addRoutes(sandbox *netlink.Conn, ifName string, routes []route.Route) error {
	l, err := link.Get(sandbox, ifName)
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	msgs := make([]netlink.Message, len(routes))
	for i, r := range routes {
		msgs[i] = route.AddMsg(l.Index, r.Dst, r.Gw, 0)
	}
	if _, err := nl.Exec(sandbox, msgs...); err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	return nil
}

// dropClashingAddrs removes from the bridge named cfg.Name the addresses
// that clash with the config's gateways, in one request.
func dropClashingAddrs(host *netlink.Conn, cfg bridge.NetworkConfig) error {
	br, err := link.Get(host, cfg.Name)
	if err != nil {
		return err
	}
	have, err := addr.List(host, br.Index)
	if err != nil {
		return err
	}
	var msgs []netlink.Message
	for _, h := range have {
		if clashes(h.Prefix, cfg) {
			msgs = append(msgs, addr.DeleteMsg(br.Index, h.Prefix))
		}
	}
	_, err = nl.ExecIgnoring(host, unix.EADDRNOTAVAIL, msgs...)
	return err
}
