package bridgetest

import (
	"errors"
	"iter"
	"net"
	"sync"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// sock is a NETLINK_NETFILTER socket that can join NFNLGRP_NFTABLES: it
// receives the namespace's nf_tables change events, and its Receive
// blocks until an answer or an event arrives, or Close. (Request/answer
// conns are nltest's; this one is for the driver's event watch and its
// conntrack conn.)
type sock struct {
	k      *Kernel
	ns     *netns
	mu     sync.Mutex
	cond   *sync.Cond
	queue  []netlink.Message
	joined bool
	closed bool
}

func (k *Kernel) newSock(ns *netns) *sock {
	s := &sock{k: k, ns: ns}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *sock) Send(m netlink.Message) error { return s.SendMessages([]netlink.Message{m}) }

func (s *sock) SendMessages(ms []netlink.Message) error {
	answers := s.k.handle(s.ns, unix.NETLINK_NETFILTER, ms)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return net.ErrClosed
	}
	s.queue = append(s.queue, answers...)
	s.cond.Broadcast()
	return nil
}

// Receive returns the next message. With nothing queued it waits if the
// socket joined a group, and fails otherwise (a request with no answer:
// the kernel would block forever).
func (s *sock) Receive() ([]netlink.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.queue) == 0 && s.joined && !s.closed {
		s.cond.Wait()
	}
	switch {
	case s.closed:
		return nil, net.ErrClosed
	case len(s.queue) == 0:
		return nil, errors.New("bridgetest: receive with no answer pending")
	}
	m := s.queue[0]
	s.queue = s.queue[1:]
	return []netlink.Message{m}, nil
}

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
	s.cond.Broadcast()
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
		w.cond.Broadcast()
		w.mu.Unlock()
	}
}
