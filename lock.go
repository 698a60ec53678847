package bridge

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"sync"

	"github.com/nlbridge/bridge/nsutil"
	"golang.org/x/sys/unix"
)

// lockDir holds one lock file per host namespace.
const lockDir = "/run/nlbridge"

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
	mu   sync.Mutex
	dir  string
	path string
	f    *os.File // open while held
	seen uint64   // token last read or written; 0 = never
}

func newHostLock(dir string, id nsutil.ID) *hostLock {
	return &hostLock{dir: dir, path: fmt.Sprintf("%s/%x-%x.lock", dir, id.Dev, id.Ino)}
}

// lock takes the lock and reports whether another process changed the
// records since this one last held it.
func (l *hostLock) lock() (changed bool, err error) {
	l.mu.Lock()
	for {
		if err := os.MkdirAll(l.dir, 0o700); err != nil {
			l.mu.Unlock()
			return false, err
		}
		f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			l.mu.Unlock()
			return false, err
		}
		if err := flock(f, unix.LOCK_EX); err != nil {
			f.Close()
			l.mu.Unlock()
			return false, err
		}
		// A file removed (see release) between open and flock is not
		// the lock any more: start again on the current one.
		var held, cur unix.Stat_t
		if unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(l.path, &cur) == nil && held.Ino == cur.Ino {
			l.f = f
			break
		}
		f.Close()
	}
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
	l.mu.Unlock()
}

// release removes the lock file if no process holds the lock now. Safe
// against racing lockers: they check, after their flock, that they hold
// the file at the path.
func (l *hostLock) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.OpenFile(l.path, os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer f.Close()
	if flock(f, unix.LOCK_EX|unix.LOCK_NB) == nil {
		os.Remove(l.path)
	}
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}
