package bridgetest

import (
	"fmt"
	"net/netip"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// netfilter answers one sendmsg on a NETLINK_NETFILTER conn: nf_tables
// batches (applied all or nothing), nf_tables dumps, and conntrack
// deletes. Must hold k.mu.
func (k *Kernel) netfilter(ns *netns, reqs []netlink.Message) []netlink.Message {
	var out []netlink.Message
	for i := 0; i < len(reqs); i++ {
		m := reqs[i]
		switch {
		case m.Header.Type == unix.NFNL_MSG_BATCH_BEGIN:
			end := i + 1
			for end < len(reqs) && reqs[end].Header.Type != unix.NFNL_MSG_BATCH_END {
				end++
			}
			batch := reqs[i+1 : end]
			errs := ns.nft.Batch(batch, func(m netlink.Message) syscall.Errno { return k.fault(ns, m, "") })
			committed := true
			for j, bm := range batch {
				out = append(out, reply(bm, nil, errs[j])...)
				committed = committed && errs[j] == 0
			}
			if committed {
				for _, bm := range batch {
					ns.notify(bm.Header.Type)
				}
			}
			i = end
		case uint16(m.Header.Type)>>8 == unix.NFNL_SUBSYS_NFTABLES:
			errno := k.fault(ns, m, "")
			var parts []netlink.Message
			if errno == 0 {
				parts, errno = ns.nft.Get(m)
			}
			if errno == 0 && m.Header.Flags&netlink.Dump == netlink.Dump {
				parts = dump(parts)
			}
			out = append(out, reply(m, parts, errno)...)
		case uint16(m.Header.Type)>>8 == unix.NFNL_SUBSYS_CTNETLINK:
			errno := k.fault(ns, m, "")
			if errno == 0 {
				errno = ns.conntrack(m)
			}
			out = append(out, reply(m, nil, errno)...)
		default:
			out = append(out, reply(m, nil, unix.EOPNOTSUPP)...)
		}
	}
	return out
}

// conntrack records a filtered flush (IPCTNL_MSG_CT_DELETE with a tuple
// address and CTA_FILTER) as "flush orig|reply src ADDR". The fake keeps
// no connections, so nothing else changes.
func (ns *netns) conntrack(m netlink.Message) syscall.Errno {
	const ctDelete, ctaTupleOrig, ctaTupleReply, ctaTupleIP, ctaFilter = 2, 1, 2, 1, 25
	if uint16(m.Header.Type)&0xff != ctDelete || len(m.Data) < 4 {
		return unix.EOPNOTSUPP
	}
	as, err := netlink.UnmarshalAttributes(m.Data[4:])
	if err != nil {
		return unix.EINVAL
	}
	dir, what := "", ""
	filtered := false
	for _, a := range as {
		switch a.Type &^ unix.NLA_F_NESTED {
		case ctaTupleOrig, ctaTupleReply:
			dir = map[uint16]string{ctaTupleOrig: "orig", ctaTupleReply: "reply"}[a.Type&^unix.NLA_F_NESTED]
			tuple, err := netlink.UnmarshalAttributes(a.Data)
			if err != nil {
				return unix.EINVAL
			}
			for _, t := range tuple {
				if t.Type&^unix.NLA_F_NESTED != ctaTupleIP {
					continue
				}
				ips, err := netlink.UnmarshalAttributes(t.Data)
				if err != nil {
					return unix.EINVAL
				}
				for _, ip := range ips {
					addr, ok := netip.AddrFromSlice(ip.Data)
					if !ok {
						return unix.EINVAL
					}
					what = fmt.Sprintf("%s %s", map[uint16]string{1: "src", 2: "dst", 3: "src", 4: "dst"}[ip.Type], addr)
				}
			}
		case ctaFilter:
			filtered = true
		}
	}
	if dir == "" || what == "" || !filtered {
		return unix.EINVAL // the fake knows only filtered flushes by address
	}
	ns.flushed = append(ns.flushed, "flush "+dir+" "+what)
	return 0
}

// Flushes lists the conntrack flushes requested in the namespace at path
// ("" = HostNS), in order, each "flush orig|reply src|dst ADDR".
func (k *Kernel) Flushes(path string) []string {
	if path == "" {
		path = HostNS
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if ns := k.nss[path]; ns != nil {
		return append([]string(nil), ns.flushed...)
	}
	return nil
}
