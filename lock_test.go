package bridge

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/nlbridge/bridge/internal/kern"
	"github.com/nlbridge/bridge/nsutil"
)

// Two hostLocks on one file behave as two processes: flock excludes
// between open file descriptions.
func TestHostLock(t *testing.T) {
	dir := t.TempDir()
	id := nsutil.ID{Dev: 4, Ino: 0xf0000001}
	k := kern.Real{LockDir: dir}
	a, b := newHostLock(k, id), newHostLock(k, id)
	step := func(l *hostLock, wantChanged, write bool) {
		t.Helper()
		changed, err := l.lock(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		l.unlock(write)
		if changed != wantChanged {
			t.Errorf("changed = %v, want %v", changed, wantChanged)
		}
	}
	step(a, true, true)   // first use: read everything
	step(a, false, false) // nothing changed since
	step(b, true, true)   // b never read; its write changes the token
	step(a, true, false)  // a sees b's change
	step(a, false, false)
	step(b, false, false) // b's own write is no change for b

	// Exclusion: b waits while a holds the lock.
	if _, err := a.lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := make(chan bool)
	go func() {
		changed, err := b.lock(context.Background())
		if err != nil {
			t.Error(err)
		}
		b.unlock(false)
		got <- changed
	}()
	select {
	case <-got:
		t.Fatal("b took the lock while a held it")
	case <-time.After(50 * time.Millisecond):
	}
	a.unlock(true)
	if changed := <-got; !changed {
		t.Error("b did not see a's change")
	}

	// Removing the file while nobody holds it costs a reload, nothing more.
	a.release()
	if _, err := os.Stat(k.LockPath(id)); !os.IsNotExist(err) {
		t.Fatalf("lock file not removed: %v", err)
	}
	step(b, true, false)
	step(b, false, false) // a fresh file got a token at the unlock
}

// A wait for the lock ends with its ctx, both for a holder in another
// process (b's flock polls, as a file description of its own) and for one
// in this process (a's own slot), and takes nothing.
func TestHostLockWaitCut(t *testing.T) {
	k := kern.Real{LockDir: t.TempDir()}
	id := nsutil.ID{Dev: 4, Ino: 0xf0000002}
	a, b := newHostLock(k, id), newHostLock(k, id)
	if _, err := a.lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, l := range []*hostLock{b, a} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		_, err := l.lock(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("lock while held: %v", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.lock(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("lock with a cancelled ctx while held: %v", err)
	}
	a.unlock(true)
	// Nothing was left taken: b gets the lock at once and sees a's change;
	// a waiting b gets it once a lets go.
	if changed, err := b.lock(context.Background()); err != nil || !changed {
		t.Fatalf("lock after the cut waits: %v, %v", changed, err)
	}
	got := make(chan error)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := a.lock(ctx)
		if err == nil {
			a.unlock(false)
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("a took the lock while b held it: %v", err)
	case <-time.After(20 * time.Millisecond): // a is polling
	}
	b.unlock(false)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}
