package engine

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/group"
	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/username"
)

// Error codes of the local API: stable, for scripts to branch on
// (docs/LOCAL_API.md).
const (
	CodeBadRequest        = "bad_request"
	CodeNotInitialized    = "not_initialized"
	CodeNotRegistered     = "not_registered"
	CodeAlreadyRegistered = "already_registered"
	CodeUsernameTaken     = "username_taken"
	CodeUnknownUser       = "unknown_user"
	CodeNotFound          = "not_found"
	CodeEmptyMessage      = "empty_message"
	CodeTooLarge          = "too_large"
	CodeIdentityChanged   = "identity_changed"
	CodeNotShown          = "not_shown"
	CodeMismatch          = "mismatch"
	CodeAlreadySent       = "already_sent"
	CodeOffline           = "offline"
	CodeServerKey         = "server_key"
	CodeStorageFull       = "storage_full"
	CodeServerFull        = "server_full"
	CodeRateLimited       = "rate_limited"
	CodeNoKeys            = "no_keys"
	CodeQuota             = "quota"
	CodeTampered          = "tampered"
	CodeInterrupted       = "interrupted"
	CodeInternal          = "internal"
	CodeEngineBusy        = "engine_busy"
	CodeRefused           = "refused"
	CodeUnknownGroup      = "unknown_group"
	CodeNotMember         = "not_member"
	CodeForbidden         = "forbidden"
	CodeGroupRefused      = "group_refused"
)

// APIError is an error the engine answered with: an HTTP status, a
// stable code and a message for people.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string { return e.Message }

// classify maps an error to its code and HTTP status.
func classify(err error) (code string, status int) {
	var ae *APIError
	switch {
	case errors.As(err, &ae):
		return ae.Code, ae.Status
	case errors.Is(err, context.Canceled):
		return CodeInterrupted, 499
	case errors.Is(err, client.ErrNotInitialized):
		return CodeNotInitialized, http.StatusConflict
	case errors.Is(err, client.ErrNotRegistered):
		return CodeNotRegistered, http.StatusConflict
	case errors.Is(err, client.ErrAlreadyRegistered):
		return CodeAlreadyRegistered, http.StatusConflict
	case errors.Is(err, client.ErrUsernameTaken):
		return CodeUsernameTaken, http.StatusConflict
	case errors.Is(err, client.ErrUsernameInvalid), errors.Is(err, username.ErrInvalid):
		return CodeBadRequest, http.StatusBadRequest
	case errors.Is(err, client.ErrUnknownUser):
		return CodeUnknownUser, http.StatusNotFound
	case errors.Is(err, client.ErrNoAvatar):
		return CodeNotFound, http.StatusNotFound
	case errors.Is(err, client.ErrUnknownGroup):
		return CodeUnknownGroup, http.StatusNotFound
	case errors.Is(err, client.ErrGroupRefused):
		return CodeGroupRefused, http.StatusConflict
	case errors.Is(err, client.ErrNotMember):
		// Before ErrForbidden: not being a member is also not being allowed.
		return CodeNotMember, http.StatusForbidden
	case errors.Is(err, client.ErrForbidden):
		return CodeForbidden, http.StatusForbidden
	case errors.Is(err, group.ErrMalformed), errors.Is(err, group.ErrNoChange):
		// A name too long, a role that is none, a link mistyped; adding
		// a member again, taking a role they have.
		return CodeBadRequest, http.StatusBadRequest
	case errors.Is(err, group.ErrTooManyMembers):
		return CodeTooLarge, http.StatusRequestEntityTooLarge
	case errors.Is(err, group.ErrTooManyRequests), errors.Is(err, client.ErrPoWRequired):
		// A sign-up puzzle the server kept refusing: its sign-ups are
		// flooded, and later is better.
		return CodeRateLimited, http.StatusTooManyRequests
	case errors.Is(err, client.ErrNoMessage), errors.Is(err, client.ErrNotSaved):
		return CodeNotFound, http.StatusNotFound
	case errors.Is(err, client.ErrEmptyMessage):
		return CodeEmptyMessage, http.StatusBadRequest
	case errors.Is(err, client.ErrTextTooLong), errors.Is(err, client.ErrTooLarge):
		return CodeTooLarge, http.StatusRequestEntityTooLarge
	case errors.Is(err, client.ErrIdentityChanged):
		return CodeIdentityChanged, http.StatusConflict
	case errors.Is(err, client.ErrNotShown):
		return CodeNotShown, http.StatusConflict
	case errors.Is(err, client.ErrMismatch):
		return CodeMismatch, http.StatusConflict
	case errors.Is(err, client.ErrAlreadySent):
		return CodeAlreadySent, http.StatusConflict
	case errors.Is(err, client.ErrStorageFull):
		return CodeStorageFull, http.StatusInsufficientStorage
	case errors.Is(err, clientconn.ErrServerFull):
		return CodeServerFull, http.StatusServiceUnavailable
	case errors.Is(err, client.ErrServerKey):
		// Before ErrOffline, which it comes wrapped in: the server is not
		// unreachable, it does not answer this key.
		return CodeServerKey, http.StatusServiceUnavailable
	case errors.Is(err, client.ErrOffline), errors.Is(err, context.DeadlineExceeded):
		return CodeOffline, http.StatusServiceUnavailable
	case errors.Is(err, client.ErrRateLimited):
		return CodeRateLimited, http.StatusTooManyRequests
	case errors.Is(err, client.ErrNoKeys):
		return CodeNoKeys, http.StatusConflict
	case errors.Is(err, client.ErrQuota):
		return CodeQuota, http.StatusInsufficientStorage
	}
	return CodeInternal, http.StatusInternalServerError
}

func badRequest(format string, args ...any) error {
	return &APIError{Status: http.StatusBadRequest, Code: CodeBadRequest, Message: fmt.Sprintf(format, args...)}
}

func refused(format string, args ...any) error {
	return &APIError{Status: http.StatusForbidden, Code: CodeRefused, Message: fmt.Sprintf(format, args...)}
}

// CodeOf is the stable code the API gives err.
func CodeOf(err error) string {
	code, _ := classify(err)
	return code
}
