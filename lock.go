package bridge

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"

	"github.com/nlbridge/bridge/internal/kern"
	"github.com/nlbridge/bridge/nsutil"
)

// hostLock serializes changes to the records of one host namespace among
// all processes and goroutines: a mutex for this process, and an flock on
// a file named after the namespace for the others. A lock held by a
// process that dies is released by the kernel, so a crash never wedges
// the next process.
//
// The file's first 8 bytes are a change token, a random number that every
// holder that changed a record writes anew. A holder that finds a token
// other than the one it last saw knows another process changed the
// records, and reloads them from the kernel. The file holds nothing else:
// deleting it only costs the next holder a reload.
type hostLock struct {
	mu   chan struct{} // one slot: taken by this process's holder
	k    kern.Kernel
	id   nsutil.ID
	f    kern.LockFile // open while held
	seen uint64        // token last read or written; 0 = never
}

func newHostLock(k kern.Kernel, id nsutil.ID) *hostLock {
	return &hostLock{mu: make(chan struct{}, 1), k: k, id: id}
}

// lock takes the lock and reports whether another process changed the
// records since this one last held it. Both waits, for this process's
// holder and for another process's, end when ctx is done: lock then fails
// with an error wrapping ctx.Err(), holding nothing.
func (l *hostLock) lock(ctx context.Context) (changed bool, err error) {
	select {
	case l.mu <- struct{}{}:
	default:
		select {
		case l.mu <- struct{}{}:
		case <-ctx.Done():
			return false, fmt.Errorf("wait for the host lock: %w", ctx.Err())
		}
	}
	f, err := l.k.Lock(ctx, l.id)
	if err != nil {
		<-l.mu
		return false, err
	}
	l.f = f
	var b [8]byte
	n, _ := l.f.ReadAt(b[:], 0)
	tok := uint64(0)
	if n == 8 {
		tok = binary.LittleEndian.Uint64(b[:])
	}
	changed = tok != l.seen || tok == 0
	l.seen = tok
	return changed, nil
}

// unlock releases the lock; wrote says whether this holder changed a
// record, so the others must reload. A file without a token gets one.
func (l *hostLock) unlock(wrote bool) {
	if wrote || l.seen == 0 {
		var b [8]byte
		for tok := uint64(0); tok == 0 || tok == l.seen; tok = binary.LittleEndian.Uint64(b[:]) {
			rand.Read(b[:])
		}
		if _, err := l.f.WriteAt(b[:], 0); err == nil {
			l.seen = binary.LittleEndian.Uint64(b[:])
		} else {
			l.seen = 0 // unknown: reload next time
		}
	}
	l.f.Close() // releases the flock
	l.f = nil
	<-l.mu
}

// release removes the lock file if no process holds the lock now (see
// kern.Real.ReleaseLock).
func (l *hostLock) release() {
	l.mu <- struct{}{}
	defer func() { <-l.mu }()
	l.k.ReleaseLock(l.id)
}
