package clientconn

import (
	"context"
	"errors"

	"github.com/magpie-im/magpie/e2e"
	"github.com/magpie-im/magpie/wire"
)

// Courier returns c as the server that end-to-end sends go through
// (e2e.Sesame). A device-list mismatch comes back as an error that matches
// both *e2e.DeviceMismatch and *ServerError with errors.As, and
// ErrMismatchedDevices with errors.Is.
func (c *Conn) Courier() e2e.Courier { return courier{c} }

type courier struct{ c *Conn }

func (k courier) Bundles(ctx context.Context, user string, devices []uint32) (*wire.GetBundlesResponse, error) {
	return k.c.GetBundles(ctx, user, devices)
}

func (k courier) Deliver(ctx context.Context, to string, id [16]byte, ephemeral bool, payloads []e2e.DevicePayload) (e2e.Delivery, error) {
	res, err := k.c.SendPerDevice(ctx, to, id, ephemeral, payloads)
	if err != nil {
		return e2e.Delivery{}, courierError(err)
	}
	return e2e.Delivery{ServerTime: res.ServerTime, Devices: res.Devices, Duplicate: res.Duplicate}, nil
}

// courierError turns a server's device-list mismatch into a mismatchError;
// other errors pass unchanged.
func courierError(err error) error {
	var se *ServerError
	if !errors.As(err, &se) || se.Mismatch == nil {
		return err
	}
	m := e2e.DeviceMismatch(*se.Mismatch)
	return &mismatchError{server: se, mismatch: &m}
}

// mismatchError is the server's answer to a per-device send whose device
// list is out of date, as both this package and e2e see it.
type mismatchError struct {
	server   *ServerError
	mismatch *e2e.DeviceMismatch
}

func (e *mismatchError) Error() string   { return e.server.Error() }
func (e *mismatchError) Unwrap() []error { return []error{e.server, e.mismatch} }
