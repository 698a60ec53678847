package bridge

import (
	"context"
	"errors"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/internal/nl"
)

// Contexts reach the sockets: while an operation uses a netlink conn, the
// conn has the ctx's deadline, and a cancel sets its deadline to now, so
// a kernel call blocked on it returns. The error then wraps ctx.Err()
// (see ctxError). Steps that undo a failed operation run on a conn of
// their own without the deadline (see Driver.undo).

// watch applies ctx to c until the returned func is called, which clears
// c's deadline again (before c goes back to the pool); see nl.Watch.
func watch(ctx context.Context, c *netlink.Conn) (stop func()) { return nl.Watch(ctx, c) }

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
func cutShort(ctx context.Context, err error) error { return nl.CutShort(ctx, err) }

// ctxCause is a kernel call cut short by its context.
type ctxCause struct{ ctx, err error }

func (c *ctxCause) Error() string   { return c.ctx.Error() + ": " + c.err.Error() }
func (c *ctxCause) Unwrap() []error { return []error{c.ctx, c.err} }
