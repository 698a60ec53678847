package main

import (
	"errors"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/nlbridge/bridge"
	"golang.org/x/sys/unix"
)

// libError maps a library error to a CNI error code.
func libError(err error) error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	var be *bridge.Error
	code := types.ErrInternal
	switch {
	case errors.Is(err, bridge.ErrInvalid) && errors.As(err, &be) && (be.Field == "NetNS" || be.Field == "IfName"):
		code = types.ErrInvalidEnvironmentVariables
	case errors.Is(err, bridge.ErrInvalid):
		code = types.ErrInvalidNetworkConfig
	case errors.Is(err, bridge.ErrExists):
		code = codeExists
	case errors.Is(err, bridge.ErrConflict):
		code = codeConflict
	case errors.Is(err, bridge.ErrClosed), errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EBUSY):
		code = types.ErrTryAgainLater
	}
	return types.NewError(code, err.Error(), "")
}
