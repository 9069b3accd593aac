package wire

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
)

// Version is the protocol version this code speaks.
const Version = uint32(ProtocolVersion_PROTOCOL_VERSION_1)

// Limits on what a peer may send. Frames beyond them are rejected before any
// work is done on them.
const (
	// ClientIDSize is the exact size of client_message_id.
	ClientIDSize = 16
	// MaxPayload is the largest envelope payload.
	MaxPayload = 256 << 10
	// MaxFrame is the largest encoded ClientFrame or ServerFrame the decoders
	// look at. It is well above MaxPayload so that an oversized payload is
	// answered with TOO_LARGE (the request id is known) instead of being
	// treated as garbage; the link's MaxMessageSize is set to it.
	MaxFrame = 1 << 20
	// MaxAckSeqs is the most queue items one Ack may name.
	MaxAckSeqs = 4096
	// MaxNameLen bounds any username field before the username rules apply.
	MaxNameLen = 64
	// SignupCodeSize is the size of an invite's sign-up code (invite.SignupCodeSize).
	SignupCodeSize = 16
	// PoWChallengeSize is the size of a sign-up puzzle's challenge
	// (signuppow.ChallengeSize).
	PoWChallengeSize = 58

	// Sizes of Signal-format keys as carried on the wire: a type byte then
	// the key (0x05 ‖ X25519, 0x08 ‖ Kyber1024), and XEdDSA signatures.
	ECKeySize     = 33
	KyberKeySize  = 1569
	SignatureSize = 64
	// MaxKeysPerUpload bounds each list of one-time prekeys in one upload.
	MaxKeysPerUpload = 100
	// MaxDevices bounds the device lists in per-device sends and bundle
	// requests.
	MaxDevices = 64
	// MaxEcho bounds a ping's echo payload.
	MaxEcho = 64 << 10
	// MaxChunk bounds an upload chunk or a download read.
	MaxChunk = 256 << 10
	// GroupIDSize is the size of a group id.
	GroupIDSize = 16
	// MaxGroupChange bounds one signed group change (a group of 1,024
	// members is created in one, with each member's name and key).
	MaxGroupChange = 256 << 10
	// LinkProofSize is the size of a group link proof (an XEdDSA
	// signature).
	LinkProofSize = 64
	// BlobIDSize is the size of attachment blob ids.
	BlobIDSize = 16
)

// ErrMalformed is wrapped by every decode or validation failure.
var ErrMalformed = errors.New("wire: malformed frame")

var unmarshal = proto.UnmarshalOptions{DiscardUnknown: true}

// DecodeClientFrame parses and validates a frame from a client. The frame is
// checked for shape and sizes only; what it asks for is the server's business.
func DecodeClientFrame(b []byte) (*ClientFrame, error) {
	if len(b) > MaxFrame {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrMalformed, len(b), MaxFrame)
	}
	f := new(ClientFrame)
	if err := unmarshal.Unmarshal(b, f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := f.validate(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *ClientFrame) validate() error {
	switch body := f.Body.(type) {
	case *ClientFrame_Ack:
		if n := len(body.Ack.GetSeqs()); n == 0 || n > MaxAckSeqs {
			return fmt.Errorf("%w: ack names %d items (1 to %d allowed)", ErrMalformed, n, MaxAckSeqs)
		}
	case *ClientFrame_Request:
		return body.Request.validate()
	default:
		return fmt.Errorf("%w: empty frame", ErrMalformed)
	}
	return nil
}

// RequestError reports a request that is well-formed protobuf but breaks a
// field rule. The server answers it with ERROR_CODE_BAD_REQUEST (or TOO_LARGE)
// rather than closing the connection, since it knows the request id.
type RequestError struct {
	ID      uint64
	Code    ErrorCode
	Message string
}

func (e *RequestError) Error() string { return "wire: request " + e.Message }
func (e *RequestError) Unwrap() error { return ErrMalformed }

func (r *Request) validate() error {
	bad := func(code ErrorCode, format string, args ...any) error {
		return &RequestError{ID: r.GetId(), Code: code, Message: fmt.Sprintf(format, args...)}
	}
	switch body := r.Body.(type) {
	case *Request_Register:
		if len(body.Register.GetUsername()) > MaxNameLen {
			return bad(ErrorCode_ERROR_CODE_USERNAME_INVALID, "username longer than %d bytes", MaxNameLen)
		}
		if n := len(body.Register.GetSignupCode()); n != 0 && n != SignupCodeSize {
			return bad(ErrorCode_ERROR_CODE_BAD_REQUEST, "a sign-up code is %d bytes", SignupCodeSize)
		}
		if n := len(body.Register.GetPowChallenge()); n != 0 && n != PoWChallengeSize {
			return bad(ErrorCode_ERROR_CODE_BAD_REQUEST, "a sign-up puzzle's challenge is %d bytes", PoWChallengeSize)
		}
	case *Request_Lookup:
		if len(body.Lookup.GetUsername()) > MaxNameLen {
			return bad(ErrorCode_ERROR_CODE_USERNAME_INVALID, "username longer than %d bytes", MaxNameLen)
		}
	case *Request_Send:
		s := body.Send
		if len(s.GetRecipient()) > MaxNameLen {
			return bad(ErrorCode_ERROR_CODE_USERNAME_INVALID, "recipient longer than %d bytes", MaxNameLen)
		}
		if len(s.GetClientMessageId()) != ClientIDSize {
			return bad(ErrorCode_ERROR_CODE_BAD_REQUEST, "client_message_id must be %d bytes, got %d", ClientIDSize, len(s.GetClientMessageId()))
		}
		if len(s.GetPayload()) > MaxPayload {
			return bad(ErrorCode_ERROR_CODE_TOO_LARGE, "payload of %d bytes exceeds %d", len(s.GetPayload()), MaxPayload)
		}
		if !s.GetPerDevice() && len(s.GetDevicePayloads()) > 0 {
			return bad(ErrorCode_ERROR_CODE_BAD_REQUEST, "device_payloads without per_device")
		}
		if s.GetPerDevice() {
			if len(s.GetPayload()) > 0 {
				return bad(ErrorCode_ERROR_CODE_BAD_REQUEST, "a per-device send carries its payloads in device_payloads only")
			}
			if len(s.GetDevicePayloads()) > MaxDevices {
				return bad(ErrorCode_ERROR_CODE_BAD_REQUEST, "more than %d devices", MaxDevices)
			}
			for _, d := range s.GetDevicePayloads() {
				if len(d.GetPayload()) > MaxPayload {
					return bad(ErrorCode_ERROR_CODE_TOO_LARGE, "payload of %d bytes for device %d exceeds %d", len(d.GetPayload()), d.GetDevice(), MaxPayload)
				}
			}
		}
	case *Request_SetKeys:
		return r.validateKeys(body.SetKeys, bad)
	case *Request_GetBundles:
		g := body.GetBundles
		if len(g.GetUsername()) > MaxNameLen {
			return bad(ErrorCode_ERROR_CODE_USERNAME_INVALID, "username longer than %d bytes", MaxNameLen)
		}
		if len(g.GetDevices()) > MaxDevices {
			return bad(ErrorCode_ERROR_CODE_BAD_REQUEST, "more than %d devices", MaxDevices)
		}
	case *Request_Ping:
		if len(body.Ping.GetEcho()) > MaxEcho {
			return bad(ErrorCode_ERROR_CODE_TOO_LARGE, "ping echo of %d bytes exceeds %d", len(body.Ping.GetEcho()), MaxEcho)
		}
	case *Request_GetEndpoints:
	case *Request_Upload:
		u := body.Upload
		if len(u.GetData()) > MaxChunk {
			return bad(ErrorCode_ERROR_CODE_TOO_LARGE, "upload chunk of %d bytes exceeds %d", len(u.GetData()), MaxChunk)
		}
		if u.GetStartSize() == 0 && len(u.GetBlobId()) != BlobIDSize {
			return bad(ErrorCode_ERROR_CODE_BAD_REQUEST, "an upload step needs a %d-byte blob id", BlobIDSize)
		}
		if n := len(u.GetDigest()); n != 0 && n != 32 {
			return bad(ErrorCode_ERROR_CODE_BAD_REQUEST, "digest of %d bytes, want 32", n)
		}
	case *Request_Download:
		d := body.Download
		if len(d.GetBlobId()) != BlobIDSize || d.GetLength() == 0 || d.GetLength() > MaxChunk {
			return bad(ErrorCode_ERROR_CODE_BAD_REQUEST, "a download needs a %d-byte blob id and 1 to %d bytes", BlobIDSize, MaxChunk)
		}
	case *Request_GroupChange:
		g := body.GroupChange
		if len(g.GetGroupId()) != GroupIDSize {
			return bad(ErrorCode_ERROR_CODE_BAD_REQUEST, "group id must be %d bytes, got %d", GroupIDSize, len(g.GetGroupId()))
		}
		if n := len(g.GetSignedChange()); n == 0 || n > MaxGroupChange {
			return bad(ErrorCode_ERROR_CODE_TOO_LARGE, "a group change of %d bytes (1 to %d allowed)", n, MaxGroupChange)
		}
	case *Request_GroupLog:
		if len(body.GroupLog.GetGroupId()) != GroupIDSize {
			return bad(ErrorCode_ERROR_CODE_BAD_REQUEST, "group id must be %d bytes, got %d", GroupIDSize, len(body.GroupLog.GetGroupId()))
		}
		if n := len(body.GroupLog.GetLinkProof()); n != 0 && n != LinkProofSize {
			return bad(ErrorCode_ERROR_CODE_BAD_REQUEST, "a link proof is %d bytes, got %d", LinkProofSize, n)
		}
	case *Request_GroupSend:
		g := body.GroupSend
		if len(g.GetGroupId()) != GroupIDSize {
			return bad(ErrorCode_ERROR_CODE_BAD_REQUEST, "group id must be %d bytes, got %d", GroupIDSize, len(g.GetGroupId()))
		}
		if len(g.GetClientMessageId()) != ClientIDSize {
			return bad(ErrorCode_ERROR_CODE_BAD_REQUEST, "client_message_id must be %d bytes, got %d", ClientIDSize, len(g.GetClientMessageId()))
		}
		if n := len(g.GetPayload()); n == 0 || n > MaxPayload {
			return bad(ErrorCode_ERROR_CODE_TOO_LARGE, "payload of %d bytes (1 to %d allowed)", n, MaxPayload)
		}
	case *Request_SignupChallenge:
	default:
		return bad(ErrorCode_ERROR_CODE_BAD_REQUEST, "has no known body; the client may be newer than the server")
	}
	return nil
}

func (r *Request) validateKeys(k *SetKeysRequest, bad func(ErrorCode, string, ...any) error) error {
	if n := len(k.GetIdentityKey()); n != 0 && n != ECKeySize {
		return bad(ErrorCode_ERROR_CODE_BAD_REQUEST, "identity key of %d bytes, want %d", n, ECKeySize)
	}
	// Signal's registration ids are 14-bit and never 0.
	if id := k.GetRegistrationId(); id > 0x3fff {
		return bad(ErrorCode_ERROR_CODE_BAD_REQUEST, "registration id %d out of range", id)
	}
	signed := func(what string, p *SignedPreKey, size int) error {
		if p == nil {
			return nil
		}
		if len(p.GetPublicKey()) != size || len(p.GetSignature()) != SignatureSize {
			return bad(ErrorCode_ERROR_CODE_BAD_REQUEST, "%s: key of %d bytes (want %d), signature of %d (want %d)",
				what, len(p.GetPublicKey()), size, len(p.GetSignature()), SignatureSize)
		}
		return nil
	}
	if err := signed("signed prekey", k.GetSignedPreKey(), ECKeySize); err != nil {
		return err
	}
	if err := signed("last-resort Kyber prekey", k.GetLastResortKyberPreKey(), KyberKeySize); err != nil {
		return err
	}
	if len(k.GetPreKeys()) > MaxKeysPerUpload || len(k.GetKyberPreKeys()) > MaxKeysPerUpload {
		return bad(ErrorCode_ERROR_CODE_TOO_LARGE, "more than %d one-time prekeys of a kind in one upload", MaxKeysPerUpload)
	}
	for _, p := range k.GetPreKeys() {
		if len(p.GetPublicKey()) != ECKeySize {
			return bad(ErrorCode_ERROR_CODE_BAD_REQUEST, "prekey %d: key of %d bytes, want %d", p.GetId(), len(p.GetPublicKey()), ECKeySize)
		}
	}
	for _, p := range k.GetKyberPreKeys() {
		if err := signed("Kyber prekey", p, KyberKeySize); err != nil {
			return err
		}
	}
	return nil
}

// DecodeServerFrame parses a frame from the server (client side).
func DecodeServerFrame(b []byte) (*ServerFrame, error) {
	if len(b) > MaxFrame {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrMalformed, len(b), MaxFrame)
	}
	f := new(ServerFrame)
	if err := unmarshal.Unmarshal(b, f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if f.Body == nil {
		return nil, fmt.Errorf("%w: empty frame", ErrMalformed)
	}
	return f, nil
}

// Marshal encodes m, appending to buf (which may be nil).
func Marshal(buf []byte, m proto.Message) ([]byte, error) {
	return proto.MarshalOptions{}.MarshalAppend(buf, m)
}
