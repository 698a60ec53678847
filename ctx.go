package bridge

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/mdlayher/netlink"
)

// Contexts reach the sockets: while an operation uses a netlink conn, the
// conn has the ctx's deadline, and a cancel sets its deadline to now, so
// a kernel call blocked on it returns. The error then wraps ctx.Err()
// (see ctxError). Steps that undo a failed operation run on a conn of
// their own without the deadline (see Driver.undo).

// watch applies ctx to c until the returned func is called, which clears
// c's deadline again (before c goes back to the pool).
func watch(ctx context.Context, c *netlink.Conn) (stop func()) {
	if ctx.Done() == nil {
		return func() {}
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl) // a conn without deadlines just gets none
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

// ctxError is err (nil stays nil) as an *Error of op, with ctx's error in
// its cause when err is a socket deadline that ctx set: then both
// errors.Is(err, context.DeadlineExceeded) (or context.Canceled) and
// errors.Is(err, os.ErrDeadlineExceeded) hold.
func ctxError(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	be := asError(op, err).(*Error)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return be
	}
	if cause := cutShort(ctx, err); cause != nil {
		be.Err = &ctxCause{ctx: cause, err: be.Err}
	}
	return be
}

// cutShort is ctx's error if err is a socket deadline that ctx set, else
// nil.
func cutShort(ctx context.Context, err error) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	cause := ctx.Err()
	if dl, ok := ctx.Deadline(); cause == nil && ok && !time.Now().Before(dl) {
		cause = context.DeadlineExceeded // the socket's timer fired before ctx's
	}
	return cause
}

// ctxCause is a kernel call cut short by its context.
type ctxCause struct{ ctx, err error }

func (c *ctxCause) Error() string   { return c.ctx.Error() + ": " + c.err.Error() }
func (c *ctxCause) Unwrap() []error { return []error{c.ctx, c.err} }
