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
// An attach is three netlink round trips (four when an automatic interface
// name finds eth0 taken): a dump of the sandbox's routes, one RTM_NEWLINK
// that creates the whole veth pair with the peer born in the sandbox, and
// one batched sendmsg that configures the sandbox side. Each network's
// host-side devices share a link group, so Network.Delete is one request.
// Detach cuts an endpoint off at once and leaves the slow part, deleting
// the veth pair, to a driver goroutine that deletes many in one request;
// Driver.Detach detaches many endpoints with one firewall batch, one link
// request and one conntrack request in the host for all of them. Each
// attach uses one throwaway thread for everything that must run inside a
// namespace.
//
// # Errors
//
// Every error is an *Error naming the operation and, for bad input, the
// field and its value. errors.Is matches its kind (ErrInvalid, ErrExists,
// ErrNotFound, ErrConflict, ErrClosed) and the kernel's errno.
//
// # Concurrency
//
// Driver, Network and Endpoint are safe for concurrent use.
package bridge
