package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/nlbridge/bridge"
)

// Plugin-specific error codes (CNI reserves 0-99 for the spec).
const (
	codeExists   uint = 100 // ADD of an attachment that exists
	codeConflict uint = 101 // an address, MAC or host port is taken, or the bridge differs
)

// attachment is what a result describes: the library's view of an
// endpoint plus the MACs of the bridge and the host end.
type attachment struct {
	bridge, hostName string
	bridgeMAC, hostMAC,
	mac net.HardwareAddr
	ifName, netns string
	v4, v6        netip.Prefix
	gw4, gw6      netip.Addr
}

// result builds a result of the reference bridge plugin's shape:
// interfaces [bridge, host veth, container interface], ips pointing at the
// container interface, the configured routes, and DNS.
func (p *plan) result(a attachment, dns types.DNS) *current.Result {
	r := &current.Result{CNIVersion: current.ImplementedSpecVersion, DNS: dns}
	r.Interfaces = []*current.Interface{
		{Name: a.bridge, Mac: a.bridgeMAC.String()},
		{Name: a.hostName, Mac: a.hostMAC.String()},
		{Name: a.ifName, Mac: a.mac.String(), Sandbox: a.netns},
	}
	if !p.conf.DNS.IsEmpty() {
		r.DNS = p.conf.DNS
	}
	idx := 2
	for i, x := range []struct {
		pfx  netip.Prefix
		gw   netip.Addr
		mode bridge.GatewayMode
		def  string
	}{{a.v4, a.gw4, p.net.GatewayModeIPv4, "0.0.0.0/0"}, {a.v6, a.gw6, p.net.GatewayModeIPv6, "::/0"}} {
		if !x.pfx.IsValid() {
			continue
		}
		ipc := &current.IPConfig{Interface: &idx, Address: ipNet(x.pfx)}
		hasGW := x.mode != bridge.Isolated
		if hasGW {
			ipc.Gateway = x.gw.AsSlice()
		}
		r.IPs = append(r.IPs, ipc)
		if hasGW && p.defRoute[i] && !p.net.Internal {
			_, dst, _ := net.ParseCIDR(x.def)
			r.Routes = append(r.Routes, &types.Route{Dst: *dst, GW: x.gw.AsSlice()})
		}
	}
	for _, rt := range p.routes {
		r.Routes = append(r.Routes, &types.Route{Dst: ipNet(rt.Dst), GW: rt.Gw.AsSlice()})
	}
	return r
}

func ipNet(p netip.Prefix) net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}

// prevAttachment is what a prevResult says of the container interface.
type prevAttachment struct {
	ifName, netns, mac, host string
	addrs                    []netip.Prefix
}

// fromPrev reads the container interface named ifName (and the host end,
// the interface before it) from a prevResult.
func fromPrev(prev types.Result, ifName string) (prevAttachment, error) {
	var pa prevAttachment
	if prev == nil {
		return pa, errors.New("no prevResult")
	}
	r, err := current.NewResultFromResult(prev)
	if err != nil {
		return pa, fmt.Errorf("prevResult: %w", err)
	}
	idx := -1
	for i, in := range r.Interfaces {
		if in.Name == ifName && in.Sandbox != "" {
			idx = i
			pa.ifName, pa.netns, pa.mac = in.Name, in.Sandbox, in.Mac
			if i > 0 && r.Interfaces[i-1].Sandbox == "" {
				pa.host = r.Interfaces[i-1].Name
			}
		}
	}
	if idx < 0 {
		return pa, fmt.Errorf("prevResult has no interface %s in a sandbox", ifName)
	}
	for _, ip := range r.IPs {
		if ip.Interface == nil || *ip.Interface != idx {
			continue
		}
		a, ok := netip.AddrFromSlice(ip.Address.IP)
		if !ok {
			continue
		}
		ones, _ := ip.Address.Mask.Size()
		pa.addrs = append(pa.addrs, netip.PrefixFrom(a.Unmap(), ones))
	}
	return pa, nil
}
