package clientconn

import (
	"errors"
	"fmt"
	"time"

	"github.com/magpie-im/magpie/wire"
)

// Sentinel errors for the server's answers that callers branch on. A
// *ServerError matches the one for its code with errors.Is.
var (
	ErrBadRequest         = errors.New("bad request")
	ErrUnauthenticated    = errors.New("device not registered")
	ErrUsernameInvalid    = errors.New("invalid username")
	ErrUsernameTaken      = errors.New("username taken")
	ErrAlreadyRegistered  = errors.New("device already registered")
	ErrUnknownUser        = errors.New("unknown user")
	ErrQueueFull          = errors.New("recipient queue full")
	ErrServerFull         = errors.New("the server's disk is full")
	ErrTooLarge           = errors.New("too large")
	ErrRateLimited        = errors.New("rate limited")
	ErrUnsupportedVersion = errors.New("unsupported protocol version")
	ErrUnavailable        = errors.New("server unavailable")
	ErrInternal           = errors.New("server error")
	ErrMismatchedDevices  = errors.New("recipient devices changed")
	ErrNoKeys             = errors.New("recipient has no end-to-end keys")
	ErrQuota              = errors.New("attachment storage quota exceeded")
	ErrOffset             = errors.New("upload offset out of step")
	ErrDigest             = errors.New("upload does not match its digest")
	ErrNotFound           = errors.New("no such attachment")
	ErrNotMember          = errors.New("not a member of that group")
	ErrConflict           = errors.New("the group changed meanwhile")
	ErrForbidden          = errors.New("the group's rules do not allow that")
	// ErrPoWRequired: the server asks new accounts for proof of work and
	// the registration had none, or a wrong, expired or used one
	// (Conn.RegisterWith solves the server's puzzle by itself).
	ErrPoWRequired = errors.New("the server asks for a solved sign-up puzzle")
)

var codeErrors = map[wire.ErrorCode]error{
	wire.ErrorCode_ERROR_CODE_BAD_REQUEST:         ErrBadRequest,
	wire.ErrorCode_ERROR_CODE_UNAUTHENTICATED:     ErrUnauthenticated,
	wire.ErrorCode_ERROR_CODE_USERNAME_INVALID:    ErrUsernameInvalid,
	wire.ErrorCode_ERROR_CODE_USERNAME_TAKEN:      ErrUsernameTaken,
	wire.ErrorCode_ERROR_CODE_ALREADY_REGISTERED:  ErrAlreadyRegistered,
	wire.ErrorCode_ERROR_CODE_UNKNOWN_USER:        ErrUnknownUser,
	wire.ErrorCode_ERROR_CODE_QUEUE_FULL:          ErrQueueFull,
	wire.ErrorCode_ERROR_CODE_STORAGE_FULL:        ErrServerFull,
	wire.ErrorCode_ERROR_CODE_TOO_LARGE:           ErrTooLarge,
	wire.ErrorCode_ERROR_CODE_RATE_LIMITED:        ErrRateLimited,
	wire.ErrorCode_ERROR_CODE_UNSUPPORTED_VERSION: ErrUnsupportedVersion,
	wire.ErrorCode_ERROR_CODE_UNAVAILABLE:         ErrUnavailable,
	wire.ErrorCode_ERROR_CODE_INTERNAL:            ErrInternal,
	wire.ErrorCode_ERROR_CODE_MISMATCHED_DEVICES:  ErrMismatchedDevices,
	wire.ErrorCode_ERROR_CODE_NO_KEYS:             ErrNoKeys,
	wire.ErrorCode_ERROR_CODE_QUOTA:               ErrQuota,
	wire.ErrorCode_ERROR_CODE_OFFSET:              ErrOffset,
	wire.ErrorCode_ERROR_CODE_DIGEST:              ErrDigest,
	wire.ErrorCode_ERROR_CODE_NOT_FOUND:           ErrNotFound,
	wire.ErrorCode_ERROR_CODE_NOT_MEMBER:          ErrNotMember,
	wire.ErrorCode_ERROR_CODE_CONFLICT:            ErrConflict,
	wire.ErrorCode_ERROR_CODE_FORBIDDEN:           ErrForbidden,
	wire.ErrorCode_ERROR_CODE_POW_REQUIRED:        ErrPoWRequired,
}

// ServerError is an error the server answered with.
type ServerError struct {
	Code       wire.ErrorCode
	Message    string        // from the server; fit to show a user
	RetryAfter time.Duration // 0 if the server gave no hint
	// Mismatch is set with ErrMismatchedDevices: how the device list of a
	// per-device send differs from the recipient's devices.
	Mismatch *Mismatch
}

// Mismatch lists the devices a per-device send must add, drop, or start
// new sessions with.
type Mismatch struct {
	Missing, Extra, Stale []uint32
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("server: %s", e.Message)
}

// Is makes errors.Is(err, ErrQueueFull) and friends work.
func (e *ServerError) Is(target error) bool { return codeErrors[e.Code] == target }

// Temporary reports whether retrying the same request later may succeed.
func (e *ServerError) Temporary() bool {
	switch e.Code {
	case wire.ErrorCode_ERROR_CODE_QUEUE_FULL, wire.ErrorCode_ERROR_CODE_RATE_LIMITED,
		wire.ErrorCode_ERROR_CODE_UNAVAILABLE, wire.ErrorCode_ERROR_CODE_INTERNAL, wire.ErrorCode_ERROR_CODE_STORAGE_FULL:
		return true
	}
	return false
}

func serverError(e *wire.Error) error {
	se := &ServerError{
		Code:       e.GetCode(),
		Message:    e.GetMessage(),
		RetryAfter: time.Duration(e.GetRetryAfterMs()) * time.Millisecond,
	}
	if m := e.GetMismatch(); m != nil {
		se.Mismatch = &Mismatch{Missing: m.GetMissing(), Extra: m.GetExtra(), Stale: m.GetStale()}
	}
	return se
}
