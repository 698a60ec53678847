package bridge

import (
	"errors"
	"fmt"
)

// Kinds of failure. Every error this package returns is an *Error, and
// errors.Is matches both its kind and the underlying cause (for example a
// unix.Errno from the kernel).
var (
	ErrInvalid  = errors.New("invalid")   // bad input; nothing was changed
	ErrExists   = errors.New("exists")    // the object is already there
	ErrNotFound = errors.New("not found") // the object is not there
	ErrConflict = errors.New("conflict")  // clashes with something already there
	ErrClosed   = errors.New("closed")    // the driver, network or endpoint is gone
)

// Error describes a failed operation: what was being done, which input was
// at fault (if any) and why.
type Error struct {
	Op    string // e.g. "create network br0", "attach eth1"
	Field string // the input at fault, e.g. "IPv4"; "" if none
	Value string // its value as given
	Kind  error  // one of the Err* kinds; nil for plain kernel failures
	Err   error  // the cause, e.g. a *netlink.OpError; may be nil
}

func (e *Error) Error() string {
	s := e.Op + ":"
	if e.Field != "" {
		s += fmt.Sprintf(" %s %q:", e.Field, e.Value)
	}
	if e.Kind != nil {
		s += " " + e.Kind.Error()
		if e.Err != nil {
			s += ":"
		}
	}
	if e.Err != nil {
		s += " " + e.Err.Error()
	}
	return s
}

// Unwrap returns the kind and the cause, for errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// invalid reports bad input for a field.
func invalid(op, field string, value any, why string) *Error {
	return &Error{Op: op, Field: field, Value: fmt.Sprint(value), Kind: ErrInvalid, Err: errors.New(why)}
}

// conflict reports input that clashes with existing state.
func conflict(op, field string, value any, why string) *Error {
	return &Error{Op: op, Field: field, Value: fmt.Sprint(value), Kind: ErrConflict, Err: errors.New(why)}
}

// kernel wraps a failure of a kernel call.
func kernel(op string, err error) *Error {
	return &Error{Op: op, Err: err}
}

// asError is err as an *Error: itself if it is one, else a kernel failure
// of op.
func asError(op string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*Error); ok {
		return err
	}
	return kernel(op, err)
}
