package nl

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/mdlayher/netlink"
)

// Watch applies ctx to c until the returned func is called, which clears
// c's deadline again: c gets ctx's deadline, and a cancel sets it to now,
// so a call blocked on c returns with os.ErrDeadlineExceeded. A conn
// without deadlines (nltest's) just gets none.
func Watch(ctx context.Context, c *netlink.Conn) (stop func()) {
	if ctx.Done() == nil {
		return func() {}
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if ctx.Err() != nil { // done already: AfterFunc's func would run too late
		c.SetDeadline(time.Unix(1, 0))
	}
	fired := make(chan struct{})
	after := context.AfterFunc(ctx, func() {
		c.SetDeadline(time.Unix(1, 0)) // in the past: blocked calls return
		close(fired)
	})
	return func() {
		if !after() {
			<-fired
		}
		c.SetDeadline(time.Time{})
	}
}

// CutShort is ctx's error if err is a socket deadline that ctx set (see
// Watch), else nil.
func CutShort(ctx context.Context, err error) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return Done(ctx)
}

// Done is ctx.Err(), or context.DeadlineExceeded once ctx's deadline has
// passed even if ctx's own timer has not fired yet (a socket's may fire
// first).
func Done(ctx context.Context) error {
	cause := ctx.Err()
	if dl, ok := ctx.Deadline(); cause == nil && ok && !time.Now().Before(dl) {
		cause = context.DeadlineExceeded
	}
	return cause
}
