package client

import (
	"errors"
	"testing"
)

// A caller told "offline" never gets a nil error, whatever status the
// engine had recorded: Sync once returned success this way, having seen a
// failed attempt counted before the status that explained it.
func TestOfflineErrIsNeverNil(t *testing.T) {
	for _, err := range []error{nil, errors.New("connection refused"), ErrOffline} {
		got := offlineErr(err)
		if got == nil || !errors.Is(got, ErrOffline) {
			t.Errorf("offlineErr(%v) = %v, want an error matching ErrOffline", err, got)
		}
		if err != nil && !errors.Is(got, err) {
			t.Errorf("offlineErr(%v) = %v lost the cause", err, got)
		}
	}
}
