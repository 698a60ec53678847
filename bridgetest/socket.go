package bridgetest

import (
	"errors"
	"iter"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// sock is a netlink socket of the fake. Like the kernel's, it queues the
// answers of each request and hands them out one per receive. It honours
// deadlines: a request held up (see Fault.Hook) or a receive with nothing
// to read returns os.ErrDeadlineExceeded once the deadline passes; the
// request still completes later, as in the kernel, its answers queued.
// A NETLINK_NETFILTER socket can join NFNLGRP_NFTABLES: it then receives
// the namespace's nf_tables change events, and its Receive blocks until
// an answer or an event arrives, or Close.
type sock struct {
	k        *Kernel
	ns       *netns
	family   int
	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every change below
	queue    []netlink.Message
	pending  int // requests being handled
	deadline time.Time
	joined   bool
	closed   bool
}

func (k *Kernel) newSock(ns *netns, family int) *sock {
	return &sock{k: k, ns: ns, family: family, changed: make(chan struct{})}
}

// wake tells waiters something changed. Must hold s.mu.
func (s *sock) wake() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// wait waits, with s.mu held on entry and return, until ready() holds or
// the deadline passes.
func (s *sock) wait(ready func() bool) error {
	for !ready() {
		dl, ch := s.deadline, s.changed
		var expired <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return os.ErrDeadlineExceeded
			}
			t := time.NewTimer(d)
			defer t.Stop()
			expired = t.C
		}
		s.mu.Unlock()
		select {
		case <-ch:
		case <-expired:
		}
		s.mu.Lock()
	}
	return nil
}

func (s *sock) Send(m netlink.Message) error { return s.SendMessages([]netlink.Message{m}) }

func (s *sock) SendMessages(ms []netlink.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return net.ErrClosed
	}
	s.pending++
	done := false
	go func() {
		answers := s.k.handle(s.ns, s.family, ms)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.pending--
		done = true
		if !s.closed {
			s.queue = append(s.queue, answers...)
		}
		s.wake()
	}()
	return s.wait(func() bool { return done || s.closed })
}

// Receive returns the next message. With nothing queued it waits if a
// request is being handled or the socket joined a group, and fails
// otherwise (a request with no answer: the kernel would block forever).
func (s *sock) Receive() ([]netlink.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.wait(func() bool { return len(s.queue) > 0 || s.closed || s.pending == 0 && !s.joined })
	switch {
	case s.closed:
		return nil, net.ErrClosed
	case err != nil:
		return nil, err
	case len(s.queue) == 0:
		return nil, errors.New("bridgetest: receive with no answer pending")
	}
	m := s.queue[0]
	s.queue = s.queue[1:]
	return []netlink.Message{m}, nil
}

// SetDeadline sets the deadline of sends and receives (the fake does not
// tell them apart).
func (s *sock) SetDeadline(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deadline = t
	s.wake()
	return nil
}

func (s *sock) SetReadDeadline(t time.Time) error  { return s.SetDeadline(t) }
func (s *sock) SetWriteDeadline(t time.Time) error { return s.SetDeadline(t) }

func (s *sock) ReceiveIter() iter.Seq2[netlink.Message, error] {
	return func(yield func(netlink.Message, error) bool) {
		msgs, err := s.Receive()
		if err != nil {
			yield(netlink.Message{}, err)
			return
		}
		for _, m := range msgs {
			if !yield(m, nil) {
				return
			}
		}
	}
}

func (s *sock) Close() error {
	s.mu.Lock()
	s.closed = true
	s.wake()
	s.mu.Unlock()
	s.k.mu.Lock()
	delete(s.ns.watchers, s)
	s.k.mu.Unlock()
	return nil
}

func (s *sock) JoinGroup(group uint32) error {
	if group != unix.NFNLGRP_NFTABLES {
		return syscall.EINVAL
	}
	s.k.mu.Lock()
	s.ns.watchers[s] = true
	s.k.mu.Unlock()
	s.mu.Lock()
	s.joined = true
	s.mu.Unlock()
	return nil
}

func (s *sock) LeaveGroup(uint32) error {
	s.k.mu.Lock()
	delete(s.ns.watchers, s)
	s.k.mu.Unlock()
	return nil
}

// notify sends an event of each type to the namespace's watchers. Must
// hold k.mu.
func (ns *netns) notify(types ...netlink.HeaderType) {
	for w := range ns.watchers {
		w.mu.Lock()
		for _, t := range types {
			w.queue = append(w.queue, netlink.Message{Header: netlink.Header{Type: t}, Data: make([]byte, 4)})
		}
		w.wake()
		w.mu.Unlock()
	}
}
