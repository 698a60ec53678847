package bridgetest

import (
	"syscall"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"github.com/mdlayher/netlink/nltest"
	"golang.org/x/sys/unix"
)

// A Fault makes the fake refuse one request as the kernel would, with
// Errno: the next request that matches every field set. A refused
// nf_tables message fails its whole batch, as in the kernel.
type Fault struct {
	// Type is the netlink message type: unix.RTM_NEWLINK, ...; for
	// nf_tables and conntrack, subsystem<<8 | message, e.g.
	// unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWSETELEM. 0 = any
	// (with Sysctl set: none).
	Type uint16
	// NetNS is the path of the namespace the request is sent in; "" =
	// any.
	NetNS string
	// Sysctl, instead of a message, refuses the next write of this
	// sysctl key (e.g. "net.ipv4.ip_forward").
	Sysctl string
	// Match, if set, must accept the request. It runs with the kernel
	// locked, so it must not call the Kernel's methods.
	Match func(netlink.Message) bool
	// Errno is the error, e.g. unix.EEXIST; 0 = EPERM, or none with Hook.
	Errno syscall.Errno
	// Hook, if set, runs when the fault fires, with the kernel unlocked
	// (it may call the Kernel's methods, e.g. RemoveNS): before the
	// request is applied, or for an nf_tables or conntrack request after
	// it. With Errno 0 the request then goes on as usual, so a hook is a
	// way to make something happen at an exact point of an operation.
	Hook func()
}

// FailNext makes the next request matching f fail with f.Errno. Faults
// fire once each, in the order they were added.
func (k *Kernel) FailNext(f Fault) {
	if f.Errno == 0 && f.Hook == nil {
		f.Errno = unix.EPERM
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.faults = append(k.faults, &f)
}

// fault takes the first fault matching the request and returns its
// errno; its hook, if any, is queued on k.hooks. Must hold k.mu.
func (k *Kernel) fault(ns *netns, m netlink.Message, sysctl string) syscall.Errno {
	for i, f := range k.faults {
		switch {
		case f.NetNS != "" && f.NetNS != ns.path,
			sysctl != "" && f.Sysctl != sysctl,
			sysctl == "" && (f.Sysctl != "" || f.Type != 0 && f.Type != uint16(m.Header.Type)),
			f.Match != nil && !f.Match(m):
			continue
		}
		k.faults = append(k.faults[:i], k.faults[i+1:]...)
		if f.Hook != nil {
			k.hooks = append(k.hooks, f.Hook)
		}
		return f.Errno
	}
	return 0
}

// dial returns a conn of the family in ns.
func (k *Kernel) dial(ns *netns, family int) (*netlink.Conn, error) {
	switch family {
	case unix.NETLINK_ROUTE, unix.NETLINK_NETFILTER:
		return netlink.NewConn(k.newSock(ns, family), nltest.PID), nil
	}
	return nil, syscall.EPROTONOSUPPORT
}

// handle answers one sendmsg.
func (k *Kernel) handle(ns *netns, family int, reqs []netlink.Message) []netlink.Message {
	k.mu.Lock()
	defer k.mu.Unlock()
	if family == unix.NETLINK_NETFILTER {
		out := k.netfilter(ns, reqs)
		k.runHooks()
		return out
	}
	var out []netlink.Message
	for _, m := range reqs {
		var answers []netlink.Message
		errno := k.fault(ns, m, "")
		k.runHooks()
		if errno == 0 {
			answers, errno = k.rtnl(ns, m)
		}
		out = append(out, reply(m, answers, errno)...)
	}
	return out
}

// reply completes the answers to m: sequence and PID, and the ack or
// error.
func reply(m netlink.Message, answers []netlink.Message, errno syscall.Errno) []netlink.Message {
	if errno != 0 {
		answers = nil // a refused request has no other answer
	}
	for i := range answers {
		answers[i].Header.Sequence, answers[i].Header.PID = m.Header.Sequence, m.Header.PID
	}
	if errno != 0 || m.Header.Flags&netlink.Acknowledge != 0 && m.Header.Flags&netlink.Dump != netlink.Dump {
		answers = append(answers, ack(m, errno))
	}
	return answers
}

func ack(m netlink.Message, errno syscall.Errno) netlink.Message {
	return netlink.Message{Header: netlink.Header{Type: netlink.Error, Sequence: m.Header.Sequence, PID: m.Header.PID},
		Data: nlenc.Int32Bytes(-int32(errno))}
}

// dump makes parts the answer of a dump: multipart, ending with Done.
func dump(parts []netlink.Message) []netlink.Message {
	for i := range parts {
		parts[i].Header.Flags |= netlink.Multi
	}
	return append(parts, netlink.Message{Header: netlink.Header{Type: netlink.Done, Flags: netlink.Multi}, Data: make([]byte, 4)})
}

// runHooks runs the queued hooks with k.mu released. Must hold k.mu.
func (k *Kernel) runHooks() {
	for len(k.hooks) > 0 {
		h := k.hooks[0]
		k.hooks = k.hooks[1:]
		k.mu.Unlock()
		h()
		k.mu.Lock()
	}
}
