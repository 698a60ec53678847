package bridge

import (
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
		changed, err := l.lock()
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
	if _, err := a.lock(); err != nil {
		t.Fatal(err)
	}
	got := make(chan bool)
	go func() {
		changed, err := b.lock()
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
