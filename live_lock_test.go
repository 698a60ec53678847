package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nlbridge/bridge"
	"github.com/nlbridge/bridge/internal/kern"
	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/sys/unix"
)

// holdFlock is the child role "flock": it takes the flock on the lock
// file of the namespace at path, says "ready" and waits to be killed.
func holdFlock(t *testing.T, path string) {
	ns, err := nsutil.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	lock := kern.Real{}.LockPath(ns.ID())
	if err := os.MkdirAll(kern.DefaultLockDir, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(lock, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	select {}
}

// While another process holds the host's flock, a CreateNetwork waits for
// it until its ctx is done: a deadline or a cancel ends the wait with an
// *Error matching the ctx's error, and nothing is made. A wait with time
// enough gets the lock once the holder dies.
func TestLiveLockWaitCutShort(t *testing.T) {
	host, _ := stateEnv(t)
	d := openDriver(t, host)
	holder := child(t, "flock", host)

	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err := d.CreateNetwork(short, stateNet)
	cancel()
	var be *bridge.Error
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &be) {
		t.Fatalf("create while another process holds the lock: %v", err)
	}
	t.Log(err)
	cancelled, cancel := context.WithCancel(ctx)
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := d.CreateNetwork(cancelled, stateNet); !errors.Is(err, context.Canceled) {
		t.Fatalf("create cancelled while another process holds the lock: %v", err)
	}
	if l := hostLinks(t, host); len(l) != 0 {
		t.Errorf("links made by the cut-short creates: %v", l)
	}

	done := make(chan error, 1)
	go func() {
		long, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, err := d.CreateNetwork(long, stateNet)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("create went through while another process holds the lock: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	kill(t, holder) // the kernel releases its flock
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	n, _ := d.Network(stateNet.Name)
	if err := n.Delete(ctx); err != nil {
		t.Fatal(err)
	}
}
