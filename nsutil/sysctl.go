package nsutil

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// ErrBadSysctl is returned for a sysctl key or value that is malformed or
// would reach outside /proc/sys/net.
var ErrBadSysctl = errors.New("bad sysctl")

// Sysctl is one net.* kernel parameter and the value to write to it.
type Sysctl struct {
	Key   string // dotted, e.g. "net.ipv4.conf.eth0.arp_notify"
	Value string
}

// ParseSysctl parses "key=value" and checks that key names a parameter under
// net.* (see Path).
func ParseSysctl(s string) (Sysctl, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return Sysctl{}, fmt.Errorf("%w %q: want key=value", ErrBadSysctl, s)
	}
	sc := Sysctl{Key: strings.TrimSpace(k), Value: strings.TrimSpace(v)}
	if _, err := sc.Path(); err != nil {
		return Sysctl{}, err
	}
	if strings.ContainsAny(sc.Value, "\x00\n") {
		return Sysctl{}, fmt.Errorf("%w %q: value has a newline or NUL", ErrBadSysctl, s)
	}
	return sc, nil
}

// Path returns the /proc/sys file of the key. Each dotted component must be
// non-empty, not "." or "..", and free of '/', so the path cannot leave
// /proc/sys/net. A component that is an interface name with dots may be
// written with '/' in dotted form, as sysctl(8) does ("eth0/100").
func (s Sysctl) Path() (string, error) {
	parts := strings.Split(s.Key, ".")
	if len(parts) < 3 || parts[0] != "net" {
		return "", fmt.Errorf("%w %q: want net.<family>.<...>.<key>", ErrBadSysctl, s.Key)
	}
	for i, p := range parts {
		p = strings.ReplaceAll(p, "/", ".")
		if p == "" || p == "." || p == ".." || strings.ContainsAny(p, "\x00 \t\n") {
			return "", fmt.Errorf("%w %q: bad component %q", ErrBadSysctl, s.Key, p)
		}
		parts[i] = p
	}
	return "/proc/sys/" + strings.Join(parts, "/"), nil
}

// WriteSysctls writes each parameter inside the namespace, in order, and
// stops at the first failure.
func (ns *NS) WriteSysctls(ss ...Sysctl) error {
	return ns.Do(func() error {
		for _, s := range ss {
			if err := WriteSysctl(s); err != nil {
				return err
			}
		}
		return nil
	})
}

// ReadSysctl reads one parameter inside the namespace.
func (ns *NS) ReadSysctl(key string) (v string, err error) {
	err = ns.Do(func() error {
		v, err = ReadSysctl(key)
		return err
	})
	return v, err
}

// WriteSysctl writes one parameter in the calling thread's namespace: for
// use inside Do.
func WriteSysctl(s Sysctl) error {
	p, err := s.Path()
	if err != nil {
		return err
	}
	if err := os.WriteFile(p, []byte(s.Value), 0); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", s.Key, s.Value, err)
	}
	return nil
}

// ReadSysctl reads one parameter in the calling thread's namespace: for
// use inside Do.
func ReadSysctl(key string) (string, error) {
	p, err := Sysctl{Key: key}.Path()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(p)
	return strings.TrimSpace(string(b)), err
}
