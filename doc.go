// Package bridge is Linux bridge networking for container runtimes, done
// entirely over netlink: no processes are started, and the caller's thread
// never changes network namespace.
//
// # Model
//
// A Driver manages one namespace (the "host", Options.NetNS). A Network is
// a bridge in it with optional IPv4 and IPv6 gateway addresses. An Endpoint
// connects a sandbox namespace to a network through a veth pair: the host
// end on the bridge, the peer inside the sandbox.
//
// # Cost
//
// An attach is four netlink round trips (five when an automatic interface
// name finds eth0 taken): a dump of the sandbox's routes, one RTM_NEWLINK
// that creates the whole veth pair with the peer born in the sandbox (and
// the endpoint's pending record), one batched sendmsg that configures the
// sandbox side, and the commit of the record (see State). Each network's
// host-side devices share a link group, so Network.Delete is one request.
// Detach cuts an endpoint off at once and leaves the slow part, deleting
// the veth pair, to a driver goroutine that deletes many in one request;
// Driver.Detach detaches many endpoints with one firewall batch, one link
// request and one conntrack request in the host for all of them. Each
// attach uses one throwaway thread for everything that must run inside a
// namespace.
//
// # State
//
// The kernel is the record: a driver keeps no files, and everything it
// knows can be read back from the host namespace by any process, so that
// a runtime can restart, crash, or run one process per CNI call. Open
// reads the networks (one dump of the bridges); a network's endpoints are
// read when it is first used (one dump of its ports). Two records, each
// one line of space-separated key=value fields in a device's
// IFLA_IFALIAS (at most 254 bytes), values percent-escaped:
//
//	bridge:   nlbridge/1 net v4=172.18.0.1/16 v6=fd18::1/64 mtu=1450 m4=routed ...
//	host end: nlbridge/1 ep id=<ID> if=eth0 ns=/run/netns/c1 mac=02420a000002 v4=10.0.0.2 p=tcp/0.0.0.0/8080/80
//
// The network record holds every NetworkConfig field that is not the
// default (v4, v6, mtu, internal, m4/m6 gateway modes, snat4/snat6,
// noicc, hostip), and for a bridge that was not ours, adopted=1 and the
// addresses added to it. The endpoint record holds its ID, interface
// name, sandbox path, MAC, addresses (the prefix length is the
// network's) and one p= per installed port: protocol (r suffix: routed),
// host address, host port, container port. While an object is being
// built its record carries owner=<pid>.<start time>; a record whose owner
// is gone is a half-made object, which GC removes. "nlbridge/1" names the
// format and its version; records of other versions, and aliases of other
// tools, are ignored. Bridges of earlier releases carry just "nlbridge":
// they are adopted as ours by CreateNetwork, not recovered.
//
// The firewall table is derived state: every rule carries a comment with
// a hash of what it should be, Open checks the table and rebuilds it (in
// one batch, with the elements of every recorded network and port) if it
// is missing or differs, and a driver watches nf_tables events to do the
// same within a second after a flush or edit.
//
// Processes that share a namespace serialize their claims (IDs,
// addresses, MACs, host ports, bridge names) with an flock on
// /run/nlbridge/<namespace>.lock, which the kernel releases when its
// holder dies; the file's only content is a change token that tells a
// holder whether to read the records again.
//
// # Errors
//
// Every error is an *Error naming the operation and, for bad input, the
// field and its value. errors.Is matches its kind (ErrInvalid, ErrExists,
// ErrNotFound, ErrConflict, ErrClosed) and the kernel's errno.
//
// # Contexts
//
// An operation checks its ctx between steps, and the netlink sockets it
// uses (rtnetlink, nf_tables and conntrack) carry the ctx's deadline (a
// cancel sets it to now), so a kernel call that hangs returns: the *Error
// then matches context.DeadlineExceeded (or context.Canceled). Waiting
// for the host lock (another operation's or process's claim) ends with
// the ctx too. What the operation had done is undone, without the
// deadline. A Detach cut short leaves its endpoints attached, to be
// detached again; once the host ends are retired, a Detach or Delete
// finishes.
//
// # Concurrency
//
// Driver, Network and Endpoint are safe for concurrent use.
//
// # Testing
//
// Code that uses this package can be tested without root: open the
// Driver with Options.Kernel set to a bridgetest.Kernel, an in-memory
// kernel that answers the driver's netlink messages as the kernel does
// and prints its state (links, addresses, routes, the nft ruleset) with
// Dump. The examples of this package run on it.
package bridge
