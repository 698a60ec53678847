//go:build !state

package main

import (
	"errors"

	"github.com/containernetworking/cni/pkg/skel"
)

// Until the library's state API lands on main, the commands are built only
// with -tags state.
var errNoState = errors.New("nlbridge: built without the state API")

func cmdAdd(*skel.CmdArgs) error    { return errNoState }
func cmdDel(*skel.CmdArgs) error    { return errNoState }
func cmdCheck(*skel.CmdArgs) error  { return errNoState }
func cmdGC(*skel.CmdArgs) error     { return errNoState }
func cmdStatus(*skel.CmdArgs) error { return errNoState }

// haveState tells the live tests whether the commands are built.
const haveState = false
