package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"
)

// lockDir holds one lock file per host network namespace.
var lockDir = "/run/nlbridge"

// lockWait bounds the wait for the lock; past it the call fails with
// "try again later" (11).
const lockWait = 60 * time.Second

// lockHost takes the plugin's lock for the caller's network namespace: an
// flock, so it dies with its holder. Under it a call opens the driver (a
// fresh read of the kernel record), chooses addresses and attaches, so
// concurrent calls never choose the same address. The returned func
// releases it and removes the file; exiting releases it too.
func lockHost() (func(), error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := os.MkdirAll(lockDir, 0o700); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	path := filepath.Join(lockDir, fmt.Sprintf("cni-%d-%d.lock", st.Dev, st.Ino))
	deadline := time.After(lockWait)
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("lock: %w", err)
		}
		done := make(chan error, 1)
		go func() { done <- unix.Flock(int(f.Fd()), unix.LOCK_EX) }()
		select {
		case err := <-done:
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("lock %s: %w", path, err)
			}
		case <-deadline:
			// The flock goroutine stays blocked; the process exits soon.
			return nil, types.NewError(types.ErrTryAgainLater, "another nlbridge call holds "+path+" for too long", "")
		}
		// The holder before us removes the file as it unlocks: a lock on
		// a file no longer at path is no lock; take the current one.
		var held, cur unix.Stat_t
		if unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(path, &cur) == nil && held.Ino == cur.Ino {
			return func() { os.Remove(path); f.Close() }, nil
		}
		f.Close()
	}
}
