// Package nl sends batches of netlink requests in one sendmsg and collects
// their answers: the one round trip that the link, addr and route packages
// build on.
package nl

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/mdlayher/netlink"
)

// Flags for requests that change state.
const (
	Create  = netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Excl
	Change  = netlink.Request | netlink.Acknowledge
	Replace = netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Replace
)

// BatchError is the kernel's refusal of one message of a batch.
type BatchError struct {
	Index int   // position of the refused message in the batch
	Err   error // *netlink.OpError; errors.Is works with the errno
}

func (e *BatchError) Error() string { return fmt.Sprintf("message %d: %v", e.Index, e.Err) }
func (e *BatchError) Unwrap() error { return e.Err }

// Exec sends msgs in one sendmsg and reads until every message flagged
// Acknowledge has been answered. It returns the other messages received
// (echoes, replies) in order. If the kernel refused any message, the first
// refusal is returned as a *BatchError after all answers were read, so the
// conn stays usable; any other error means the conn must be closed.
func Exec(c *netlink.Conn, msgs ...netlink.Message) ([]netlink.Message, error) {
	return ExecIgnoring(c, 0, msgs...)
}

// ExecIgnoring is Exec, counting refusals with errno ignore (e.g. ENOENT
// for "nothing to delete") as success. No messages send nothing (an empty
// sendmsg fails with ENODATA).
func ExecIgnoring(c *netlink.Conn, ignore syscall.Errno, msgs ...netlink.Message) ([]netlink.Message, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	if len(msgs) > MaxBatch {
		return execChunks(c, ignore, msgs)
	}
	sent, err := c.SendMessages(msgs)
	if err != nil {
		return nil, err
	}
	pending := make(map[uint32]int, len(sent))
	for i, m := range sent {
		if m.Header.Flags&netlink.Acknowledge != 0 {
			pending[m.Header.Sequence] = i
		}
	}
	var replies []netlink.Message
	var refused *BatchError
	for len(pending) > 0 {
		got, err := c.Receive()
		if err != nil {
			var oe *netlink.OpError
			i, ok := 0, false
			if errors.As(err, &oe) {
				i, ok = pending[oe.Sequence]
			}
			if !ok {
				return nil, err
			}
			delete(pending, oe.Sequence)
			if ignore != 0 && errors.Is(err, ignore) {
				continue
			}
			if refused == nil || i < refused.Index {
				refused = &BatchError{Index: i, Err: err}
			}
			continue
		}
		if len(got) == 0 {
			return nil, errors.New("netlink: conn returned no answer")
		}
		for _, m := range got {
			if m.Header.Type == netlink.Error {
				delete(pending, m.Header.Sequence)
				continue
			}
			replies = append(replies, m)
		}
	}
	if refused != nil {
		return replies, refused
	}
	return replies, nil
}

// MaxBatch bounds the messages of one sendmsg. The kernel answers each
// with an ack of its own (about 1 KiB of receive buffer each); a few
// hundred overflow the socket's receive buffer, and the lost acks would be
// waited for forever. Longer batches go in chunks of MaxBatch, one round
// trip each.
const MaxBatch = 64

// execChunks is ExecIgnoring for batches longer than MaxBatch: every chunk
// is sent, and the first refusal is reported by its index in msgs.
func execChunks(c *netlink.Conn, ignore syscall.Errno, msgs []netlink.Message) ([]netlink.Message, error) {
	var replies []netlink.Message
	var refused *BatchError
	for i := 0; i < len(msgs); i += MaxBatch {
		r, err := ExecIgnoring(c, ignore, msgs[i:min(i+MaxBatch, len(msgs))]...)
		replies = append(replies, r...)
		var be *BatchError
		switch {
		case errors.As(err, &be):
			if refused == nil {
				refused = &BatchError{Index: i + be.Index, Err: be.Err}
			}
		case err != nil:
			return nil, err
		}
	}
	if refused != nil {
		return replies, refused
	}
	return replies, nil
}

// Dump sends one dump request and returns all parts of the answer.
func Dump(c *netlink.Conn, typ netlink.HeaderType, data []byte) ([]netlink.Message, error) {
	return c.Execute(netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Dump},
		Data:   data,
	})
}
