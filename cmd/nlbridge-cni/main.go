// Command nlbridge-cni is a CNI plugin (binary name "nlbridge", conflist
// "type": "nlbridge") built on the nlbridge library: a Linux bridge network
// whose links, addresses, NAT and published ports are set over netlink,
// with no process started except a delegated ipam plugin.
//
// It implements CNI spec 1.1 (ADD, DEL, CHECK, STATUS, GC, VERSION) and
// answers in the config's cniVersion, 0.3.0 to 1.1.0. It accepts the
// reference bridge plugin's configuration; see the README's "CNI" section.
//
// Each call is its own process. Nothing is kept in files: the kernel is the
// record, read back by the library's Open. Calls on one host namespace are
// serialised by a lock (see lock.go), so concurrent ADDs never choose the
// same address.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
)

// versions are the CNI spec versions the plugin speaks.
var versions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add: cmdAdd, Del: cmdDel, Check: cmdCheck, GC: cmdGC, Status: cmdStatus,
	}, versions, "CNI plugin nlbridge (netlink bridge, no exec)")
}
