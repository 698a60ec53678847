package nl_test

import (
	"errors"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/internal/nl"
	"github.com/nlbridge/bridge/internal/nltestutil"
	"golang.org/x/sys/unix"
)

func msg(typ netlink.HeaderType, flags netlink.HeaderFlags) netlink.Message {
	return netlink.Message{Header: netlink.Header{Type: typ, Flags: flags}, Data: []byte{1, 2, 3, 4}}
}

func TestExecSendsOneBatchAndCollectsEchoes(t *testing.T) {
	r := &nltestutil.Recorder{Reply: func(m netlink.Message) ([]netlink.Message, int) {
		if m.Header.Flags&netlink.Echo != 0 {
			return []netlink.Message{{Header: netlink.Header{Type: unix.RTM_NEWLINK}, Data: []byte("echo")}}, 0
		}
		return nil, 0
	}}
	c := r.Dial()
	replies, err := nl.Exec(c, msg(unix.RTM_NEWLINK, nl.Create|netlink.Echo), msg(unix.RTM_NEWADDR, nl.Create), msg(unix.RTM_NEWROUTE, nl.Create))
	if err != nil {
		t.Fatal(err)
	}
	if r.Sends != 1 || len(r.Reqs) != 3 {
		t.Fatalf("sends=%d reqs=%d, want 1 sendmsg with 3 messages", r.Sends, len(r.Reqs))
	}
	if len(replies) != 1 || string(replies[0].Data) != "echo" {
		t.Fatalf("replies = %+v, want the one echo", replies)
	}
	// The conn is clean: the next request gets its own answer.
	if _, err := nl.Exec(c, msg(unix.RTM_NEWADDR, nl.Create)); err != nil {
		t.Fatal(err)
	}
}

func TestExecReportsTheRefusedMessage(t *testing.T) {
	r := &nltestutil.Recorder{Reply: func(m netlink.Message) ([]netlink.Message, int) {
		if m.Header.Type == unix.RTM_NEWADDR {
			return nil, int(unix.EEXIST)
		}
		return nil, 0
	}}
	_, err := nl.Exec(r.Dial(), msg(unix.RTM_NEWLINK, nl.Change), msg(unix.RTM_NEWADDR, nl.Create), msg(unix.RTM_NEWROUTE, nl.Create))
	var be *nl.BatchError
	if !errors.As(err, &be) || be.Index != 1 {
		t.Fatalf("err = %v, want a BatchError for message 1", err)
	}
	if !errors.Is(err, unix.EEXIST) {
		t.Fatalf("errors.Is(%v, EEXIST) = false", err)
	}
}

func TestExecIgnoringSkipsOnlyThatErrno(t *testing.T) {
	errnos := []int{int(unix.ENOENT), 0, int(unix.EPERM)}
	i := 0
	r := &nltestutil.Recorder{Reply: func(netlink.Message) ([]netlink.Message, int) { i++; return nil, errnos[i-1] }}
	c := r.Dial()
	_, err := nl.ExecIgnoring(c, unix.ENOENT, msg(1, nl.Change), msg(2, nl.Change), msg(3, nl.Change))
	var be *nl.BatchError
	if !errors.As(err, &be) || be.Index != 2 || !errors.Is(err, unix.EPERM) {
		t.Fatalf("err = %v, want EPERM on message 2 (ENOENT on 0 ignored)", err)
	}
}

// Regression: GC's batch of half-made pairs may be empty; an empty sendmsg
// fails with ENODATA, so nothing is sent.
func TestExecNothingSendsNothing(t *testing.T) {
	r := &nltestutil.Recorder{}
	replies, err := nl.ExecIgnoring(r.Dial(), unix.ENODEV)
	if err != nil || replies != nil || r.Sends != 0 {
		t.Fatalf("replies %v, err %v, sends %d; want nothing sent", replies, err, r.Sends)
	}
}

// Regression: a batch of 1,000 requests (Network.Delete's conntrack flush
// of 1,000 endpoints) overflowed the receive buffer with acks and waited
// forever for the lost ones. It goes in chunks of MaxBatch, and a refusal
// is reported at its index in the whole batch.
func TestExecChunksLongBatches(t *testing.T) {
	n := 0
	r := &nltestutil.Recorder{Reply: func(netlink.Message) ([]netlink.Message, int) {
		n++
		if n == 2*nl.MaxBatch+3 {
			return nil, int(unix.EPERM)
		}
		return nil, int(unix.ENOENT)
	}}
	msgs := make([]netlink.Message, 1000)
	for i := range msgs {
		msgs[i] = msg(unix.RTM_DELLINK, nl.Change)
	}
	_, err := nl.ExecIgnoring(r.Dial(), unix.ENOENT, msgs...)
	var be *nl.BatchError
	if !errors.As(err, &be) || be.Index != 2*nl.MaxBatch+2 || !errors.Is(err, unix.EPERM) {
		t.Fatalf("err = %v, want EPERM on message %d", err, 2*nl.MaxBatch+2)
	}
	if want := (1000 + nl.MaxBatch - 1) / nl.MaxBatch; r.Sends != want || len(r.Reqs) != 1000 {
		t.Fatalf("%d sendmsg with %d messages, want %d with 1000", r.Sends, len(r.Reqs), want)
	}
}
