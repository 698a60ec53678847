package nsutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// DefaultNetNSDir is where iproute2 keeps named namespaces.
const DefaultNetNSDir = "/run/netns"

// Create makes a new, empty network namespace pinned at dir/name (dir ""
// means DefaultNetNSDir), the way `ip netns add` does, and opens it. The
// caller's thread is not moved. Remove it with Delete.
func Create(dir, name string) (*NS, error) {
	if dir == "" {
		dir = DefaultNetNSDir
	}
	if name == "" || name == "." || name == ".." || filepath.Base(name) != name {
		return nil, fmt.Errorf("netns name %q: %w", name, os.ErrInvalid)
	}
	if err := sharedMountDir(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return nil, err
	}
	f.Close()

	// A thread leaves its namespace for a new one, which the bind mount
	// pins at path before the thread returns home.
	err = onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		return nil
	}, func() error {
		self := "/proc/self/task/" + strconv.Itoa(unix.Gettid()) + "/ns/net"
		return unix.Mount(self, path, "none", unix.MS_BIND, "")
	})
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("create netns %s: %w", path, err)
	}
	ns, err := Open(path)
	if err != nil {
		Delete(path)
	}
	return ns, err
}

// Delete unpins a namespace made by Create (or `ip netns add`) at path. The
// namespace itself goes away when nothing else holds it. A missing path is
// not an error.
func Delete(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// sharedMountDir makes dir exist and be a shared mount point, so that bind
// mounts under it are seen in other mount namespaces (as iproute2 does).
func sharedMountDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == unix.EINVAL { // not a mount point yet
		if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", dir, err)
		}
		err = unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	return nil
}
