package libsignaloracle

import "fmt"

// Address names one device of a party, as libsignal's ProtocolAddress does.
type Address struct {
	Name     string `json:"name"`
	DeviceID uint32 `json:"deviceId"`
}

// Party is a libsignal client inside the harness, with its own in-memory
// identity, session and prekey stores.
type Party struct {
	Name           string
	DeviceID       uint32
	RegistrationID uint32
	// IdentityKey is the serialized identity public key (0x05 || 32 bytes).
	IdentityKey []byte
	// IdentityPrivate is the serialized identity private key (32 bytes), so
	// that a Magpie identity can be the same key. Never log it.
	IdentityPrivate []byte
}

// Address returns the party's device address.
func (p Party) Address() Address { return Address{Name: p.Name, DeviceID: p.DeviceID} }

// String names the party without its keys, so that printing one is safe.
func (p Party) String() string { return fmt.Sprintf("%s.%d", p.Name, p.DeviceID) }

// NewParty creates a party with a fresh identity key pair.
func (o *Oracle) NewParty(name string, deviceID, registrationID uint32) Party {
	o.t.Helper()
	return o.newParty("newParty", name, deviceID, registrationID, nil)
}

// NewPartyWithIdentity creates a party whose identity is the given
// serialized private key (32 bytes).
func (o *Oracle) NewPartyWithIdentity(name string, deviceID, registrationID uint32, identityPrivate []byte) Party {
	o.t.Helper()
	return o.newParty("newPartyWithIdentity", name, deviceID, registrationID, identityPrivate)
}

func (o *Oracle) newParty(cmd, name string, deviceID, registrationID uint32, identityPrivate []byte) Party {
	o.t.Helper()
	args := map[string]any{"name": name, "deviceId": deviceID, "registrationId": registrationID}
	if identityPrivate != nil {
		args["identityPrivate"] = identityPrivate
	}
	var r struct {
		IdentityKey     []byte `json:"identityKey"`
		IdentityPrivate []byte `json:"identityPrivate"`
	}
	o.must(cmd, args, &r)
	return Party{
		Name: name, DeviceID: deviceID, RegistrationID: registrationID,
		IdentityKey: r.IdentityKey, IdentityPrivate: r.IdentityPrivate,
	}
}

// Bundle is a prekey bundle's public parts, serialized as libsignal
// serializes them: EC keys as 0x05 || 32 bytes, the Kyber key as
// 0x08 || 1568 bytes, signatures as 64-byte XEdDSA signatures by the
// identity key over the serialized prekey.
type Bundle struct {
	RegistrationID        uint32  `json:"registrationId"`
	DeviceID              uint32  `json:"deviceId"`
	IdentityKey           []byte  `json:"identityKey"`
	SignedPreKeyID        uint32  `json:"signedPreKeyId"`
	SignedPreKey          []byte  `json:"signedPreKey"`
	SignedPreKeySignature []byte  `json:"signedPreKeySignature"`
	KyberPreKeyID         uint32  `json:"kyberPreKeyId"`
	KyberPreKey           []byte  `json:"kyberPreKey"`
	KyberPreKeySignature  []byte  `json:"kyberPreKeySignature"`
	PreKeyID              *uint32 `json:"preKeyId"`
	PreKey                []byte  `json:"preKey"`
}

// Bundle makes a fresh signed prekey, a signed Kyber1024 prekey and,
// optionally, a one-time prekey for the party, keeps their private halves in
// its stores, and returns the bundle a server would hand out.
func (o *Oracle) Bundle(name string, withOneTimePreKey bool) Bundle {
	o.t.Helper()
	var b Bundle
	o.must("bundle", map[string]any{"name": name, "withOneTimePreKey": withOneTimePreKey}, &b)
	return b
}

// ProcessBundle starts a session from the party to peer with libsignal's
// processPreKeyBundle. It returns libsignal's error for a bad bundle (for
// instance a bad signature).
func (o *Oracle) ProcessBundle(name string, peer Address, b Bundle) error {
	o.t.Helper()
	return o.call("processBundle", map[string]any{"name": name, "peer": peer, "bundle": b}, nil)
}

// Message is a libsignal ciphertext message.
type Message struct {
	Type int    `json:"type"` // TypePreKey or TypeWhisper
	Body []byte `json:"body"` // the serialized message
}

// Encrypt encrypts plaintext from the party to peer.
func (o *Oracle) Encrypt(name string, peer Address, plaintext []byte) Message {
	o.t.Helper()
	var m Message
	o.must("encrypt", map[string]any{"name": name, "peer": peer, "plaintext": plaintext}, &m)
	return m
}

// Decrypt decrypts a message that peer sent to the party. A message that
// libsignal rejects returns *Error.
func (o *Oracle) Decrypt(name string, peer Address, m Message) ([]byte, error) {
	o.t.Helper()
	var r struct {
		Plaintext []byte `json:"plaintext"`
	}
	err := o.call("decrypt", map[string]any{"name": name, "peer": peer, "type": m.Type, "body": m.Body}, &r)
	if err != nil {
		return nil, err
	}
	if r.Plaintext == nil {
		r.Plaintext = []byte{}
	}
	return r.Plaintext, nil
}

// MessageInfo is what libsignal's own decoders read from a message header.
type MessageInfo struct {
	Version int `json:"version"`
	// PreKey messages only.
	RegistrationID uint32  `json:"registrationId"`
	PreKeyID       *uint32 `json:"preKeyId"`
	SignedPreKeyID uint32  `json:"signedPreKeyId"`
	// Whisper messages only.
	Counter      uint32 `json:"counter"`
	PQRatchetLen int    `json:"pqRatchetLen"` // length of the SPQR field (0: none)
}

// Inspect parses a message with libsignal's decoders, returning *Error if
// libsignal cannot parse it.
func (o *Oracle) Inspect(m Message) (MessageInfo, error) {
	o.t.Helper()
	var info MessageInfo
	err := o.call("inspect", map[string]any{"type": m.Type, "body": m.Body}, &info)
	return info, err
}

// KyberUse records one use of a Kyber prekey in a PreKey message.
type KyberUse struct {
	KyberPreKeyID  uint32 `json:"kyberPreKeyId"`
	SignedPreKeyID uint32 `json:"signedPreKeyId"`
}

// PreKeyState reports which one-time prekeys the party still holds and which
// Kyber prekey uses it has recorded.
func (o *Oracle) PreKeyState(name string) (preKeyIDs []uint32, kyberUsed []KyberUse) {
	o.t.Helper()
	var r struct {
		PreKeyIDs []uint32   `json:"preKeyIds"`
		KyberUsed []KyberUse `json:"kyberUsed"`
	}
	o.must("preKeyState", map[string]any{"name": name}, &r)
	return r.PreKeyIDs, r.KyberUsed
}

// Fingerprint computes the safety number with libsignal's Fingerprint API
// using Signal's parameters (5200 iterations, version 2). Keys are
// serialized public keys (0x05 || 32 bytes).
func (o *Oracle) Fingerprint(localID, localKey, remoteID, remoteKey []byte) (displayable string, scannable []byte) {
	o.t.Helper()
	return o.FingerprintWith(FingerprintIterations, FingerprintVersion, localID, localKey, remoteID, remoteKey)
}

// FingerprintWith is Fingerprint with explicit iterations and version.
func (o *Oracle) FingerprintWith(iterations, version int, localID, localKey, remoteID, remoteKey []byte) (string, []byte) {
	o.t.Helper()
	var r struct {
		Displayable string `json:"displayable"`
		Scannable   []byte `json:"scannable"`
	}
	o.must("fingerprint", map[string]any{
		"iterations": iterations, "version": version,
		"localId": localID, "localKey": localKey, "remoteId": remoteID, "remoteKey": remoteKey,
	}, &r)
	return r.Displayable, r.Scannable
}

// Sign makes an XEdDSA signature with a serialized private key (32 bytes).
func (o *Oracle) Sign(privateKey, message []byte) []byte {
	o.t.Helper()
	var r struct {
		Signature []byte `json:"signature"`
	}
	o.must("sign", map[string]any{"privateKey": privateKey, "message": message}, &r)
	return r.Signature
}

// Verify checks an XEdDSA signature with a serialized public key.
func (o *Oracle) Verify(publicKey, message, signature []byte) bool {
	o.t.Helper()
	var r struct {
		Valid bool `json:"valid"`
	}
	o.must("verify", map[string]any{"publicKey": publicKey, "message": message, "signature": signature}, &r)
	return r.Valid
}

// KEMGenerate makes a Kyber1024 key pair, serialized with its type byte
// (0x08). libsignal-client 0.90.0 exposes no encapsulate or decapsulate to
// Node; the KEM itself is exercised through PQXDH sessions.
func (o *Oracle) KEMGenerate() (publicKey, secretKey []byte) {
	o.t.Helper()
	var r struct {
		PublicKey []byte `json:"publicKey"`
		SecretKey []byte `json:"secretKey"`
	}
	o.must("kemGenerate", nil, &r)
	return r.PublicKey, r.SecretKey
}

// KEMCheck parses serialized KEM keys with libsignal (either may be nil) and
// returns them as libsignal serializes them again, or *Error if libsignal
// rejects them.
func (o *Oracle) KEMCheck(publicKey, secretKey []byte) (pub, sec []byte, err error) {
	o.t.Helper()
	args := map[string]any{}
	if publicKey != nil {
		args["publicKey"] = publicKey
	}
	if secretKey != nil {
		args["secretKey"] = secretKey
	}
	var r struct {
		PublicKey []byte `json:"publicKey"`
		SecretKey []byte `json:"secretKey"`
	}
	err = o.call("kemCheck", args, &r)
	return r.PublicKey, r.SecretKey, err
}
