package nl_test

import (
	"context"
	"iter"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/nlbridge/bridge/internal/nl"
)

// deadlineSock records the deadlines set on it.
type deadlineSock struct {
	mu sync.Mutex
	dl []time.Time
}

func (s *deadlineSock) SetDeadline(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dl = append(s.dl, t)
	return nil
}
func (s *deadlineSock) SetReadDeadline(t time.Time) error  { return s.SetDeadline(t) }
func (s *deadlineSock) SetWriteDeadline(t time.Time) error { return s.SetDeadline(t) }
func (s *deadlineSock) Close() error                       { return nil }
func (s *deadlineSock) Send(netlink.Message) error         { return nil }
func (s *deadlineSock) SendMessages([]netlink.Message) error {
	return nil
}
func (s *deadlineSock) Receive() ([]netlink.Message, error) { return nil, nil }
func (s *deadlineSock) ReceiveIter() iter.Seq2[netlink.Message, error] {
	return func(func(netlink.Message, error) bool) {}
}

func (s *deadlineSock) last() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.dl) == 0 {
		return time.Time{}
	}
	return s.dl[len(s.dl)-1]
}

// A ctx's deadline goes on the conn; a ctx that is done already puts one
// in the past on it before Watch returns, so the call that follows fails
// at once; stop clears it.
func TestWatch(t *testing.T) {
	s := &deadlineSock{}
	c := netlink.NewConn(s, 1)
	dl := time.Now().Add(time.Hour)
	ctx, cancel := context.WithDeadline(context.Background(), dl)
	stop := nl.Watch(ctx, c)
	if got := s.last(); !got.Equal(dl) {
		t.Errorf("deadline %v, want %v", got, dl)
	}
	stop()
	if got := s.last(); !got.IsZero() {
		t.Errorf("deadline %v after stop, want none", got)
	}
	cancel()
	stop = nl.Watch(ctx, c)
	if got := s.last(); !got.Before(time.Now()) {
		t.Errorf("deadline %v with a done ctx, want one in the past", got)
	}
	stop()
	if got := s.last(); !got.IsZero() {
		t.Errorf("deadline %v after stop, want none", got)
	}
	n := len(s.dl)
	if nl.Watch(context.Background(), c)(); len(s.dl) != n {
		t.Errorf("%d deadlines set, want none for a ctx that is never done", len(s.dl)-n)
	}
}
