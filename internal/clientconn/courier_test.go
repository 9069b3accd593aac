package clientconn

import (
	"errors"
	"slices"
	"testing"

	"github.com/magpie-im/magpie/e2e"
	"github.com/magpie-im/magpie/wire"
)

// The server's mismatch answer must reach e2e.Sesame as an
// *e2e.DeviceMismatch (or it would not reconcile) and still read as the
// server's error to callers that check for that. (bench's
// TestE2ESendStartsAndReconcilesSessions runs it against a real server.)
func TestCourierMismatchIsBothE2EAndServerError(t *testing.T) {
	se := &ServerError{
		Code:     wire.ErrorCode_ERROR_CODE_MISMATCHED_DEVICES,
		Message:  "the recipient's devices changed",
		Mismatch: &Mismatch{Missing: []uint32{4}, Extra: []uint32{3}, Stale: []uint32{2}},
	}
	err := courierError(se)
	var m *e2e.DeviceMismatch
	if !errors.As(err, &m) || !slices.Equal(m.Missing, []uint32{4}) || !slices.Equal(m.Extra, []uint32{3}) || !slices.Equal(m.Stale, []uint32{2}) {
		t.Errorf("as *e2e.DeviceMismatch: %+v", m)
	}
	var got *ServerError
	if !errors.As(err, &got) || got != se {
		t.Errorf("as *ServerError: %v", got)
	}
	if !errors.Is(err, ErrMismatchedDevices) || err.Error() != se.Error() {
		t.Errorf("%q does not read as the server's error", err)
	}

	// Any other error passes as it is.
	full := &ServerError{Code: wire.ErrorCode_ERROR_CODE_QUEUE_FULL, Message: "queue full"}
	if err := courierError(full); err != full || errors.As(err, &m) {
		t.Errorf("queue full became %v", err)
	}
}
