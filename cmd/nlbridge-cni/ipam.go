package main

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// choose picks the endpoint address of one family: the wanted one (which
// must be in a range), or the lowest free address of the ranges. used holds
// the addresses of the network's endpoints. A zero prefix with a nil error
// means the pool is absent.
func choose(pl *pool, want netip.Addr, used map[netip.Addr]bool) (netip.Prefix, error) {
	if pl == nil {
		if want.IsValid() {
			return netip.Prefix{}, argsError("IP %s: the network has no subnet of that family", want)
		}
		return netip.Prefix{}, nil
	}
	if want.IsValid() {
		switch {
		case !pl.contains(want) && !pl.subnet.Contains(want):
			return netip.Prefix{}, argsError("IP %s: outside the subnet %s", want, pl.subnet)
		case want == pl.gateway:
			return netip.Prefix{}, argsError("IP %s: is the gateway", want)
		case used[want]:
			return netip.Prefix{}, types.NewError(codeConflict, fmt.Sprintf("IP %s: in use by another attachment", want), "")
		}
		return netip.PrefixFrom(want, pl.subnet.Bits()), nil
	}
	for _, r := range pl.ranges {
		for a := r[0]; a.IsValid() && a.Compare(r[1]) <= 0; a = a.Next() {
			if a != pl.gateway && !used[a] {
				return netip.PrefixFrom(a, pl.subnet.Bits()), nil
			}
		}
	}
	return netip.Prefix{}, types.NewError(codeConflict, "no free address left in the ranges of "+pl.subnet.String(), "")
}

// delegate runs a non-host-local ipam plugin, as CNI requires.
type delegate struct {
	typ   string
	stdin []byte
}

// add runs the ipam ADD and turns its result into pools holding the one
// address it gave per family, and the routes and DNS it returned.
func (d delegate) add(ctx context.Context, p *plan) (*current.Result, []netip.Addr, error) {
	r, err := invoke.DelegateAdd(ctx, d.typ, d.stdin, nil)
	if err != nil {
		return nil, nil, err
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, nil, err
	}
	var want []netip.Addr
	for _, ip := range res.IPs {
		a, ok := netip.AddrFromSlice(ip.Address.IP)
		if !ok {
			continue
		}
		a = a.Unmap()
		ones, _ := ip.Address.Mask.Size()
		pl := &pool{subnet: netip.PrefixFrom(a, ones).Masked()}
		if g, ok := netip.AddrFromSlice(ip.Gateway); ok {
			pl.gateway = g.Unmap()
		} else {
			pl.gateway = pl.subnet.Addr().Next()
		}
		pl.ranges = [][2]netip.Addr{{a, a}}
		slot := &p.v4
		if a.Is6() {
			slot = &p.v6
		}
		if *slot != nil {
			return nil, nil, unsupported("ipam result", ip.Address.String(), "one address per family only")
		}
		*slot = pl
		want = append(want, a)
	}
	for i, rt := range res.Routes {
		if err := p.addRoute(fmt.Sprintf("ipam result routes[%d]", i), rt); err != nil {
			return nil, nil, err
		}
	}
	p.net.IPv4, p.net.IPv6 = p.v4.prefix(), p.v6.prefix()
	return res, want, nil
}

func (d delegate) del(ctx context.Context) error {
	return invoke.DelegateDel(ctx, d.typ, d.stdin, nil)
}

// readResolvConf reads host-local's resolvConf file into CNI DNS settings.
func readResolvConf(path string) (types.DNS, error) {
	var dns types.DNS
	f, err := os.Open(path)
	if err != nil {
		return dns, configError("ipam.resolvConf", quote(path), err.Error())
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") || strings.HasPrefix(fields[0], ";") {
			continue
		}
		switch fields[0] {
		case "nameserver":
			dns.Nameservers = append(dns.Nameservers, fields[1])
		case "domain":
			dns.Domain = fields[1]
		case "search":
			dns.Search = append(dns.Search, fields[1:]...)
		case "options":
			dns.Options = append(dns.Options, fields[1:]...)
		}
	}
	return dns, sc.Err()
}
