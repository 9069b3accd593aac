package libsignaloracle

// Sender Keys, libsignal's group cipher. Distribution ids are UUID strings,
// as libsignal's Node API takes them; every party keeps its sender key
// records per (sender address, distribution id), its own among them.

// TypeSenderKey is libsignal's CiphertextMessageType of a SenderKeyMessage.
const TypeSenderKey = 7

// SenderKeyDistributionInfo is what libsignal reads from a
// SenderKeyDistributionMessage (its Node API has no getter for the signing
// key).
type SenderKeyDistributionInfo struct {
	DistributionID string `json:"distributionId"`
	ChainID        uint32 `json:"chainId"`
	Iteration      uint32 `json:"iteration"`
	ChainKey       []byte `json:"chainKey"`
}

// SenderKeyMessageInfo is what libsignal reads from a SenderKeyMessage.
type SenderKeyMessageInfo struct {
	DistributionID string `json:"distributionId"`
	ChainID        uint32 `json:"chainId"`
	Iteration      uint32 `json:"iteration"`
	Ciphertext     []byte `json:"ciphertext"`
	// SignatureValid is libsignal's verdict on the signature, when a
	// signing key was given.
	SignatureValid *bool `json:"signatureValid"`
}

// CreateSenderKeyDistribution is SenderKeyDistributionMessage.create for the
// party itself: it makes the party's chain for distributionID the first
// time, and returns the serialized message.
func (o *Oracle) CreateSenderKeyDistribution(name, distributionID string) []byte {
	o.t.Helper()
	var r struct {
		Body []byte `json:"body"`
	}
	o.must("skdmCreate", map[string]any{"name": name, "distributionId": distributionID}, &r)
	return r.Body
}

// ProcessSenderKeyDistribution deserializes a SenderKeyDistributionMessage
// from sender and processes it with processSenderKeyDistributionMessage.
func (o *Oracle) ProcessSenderKeyDistribution(name string, sender Address, msg []byte) error {
	o.t.Helper()
	return o.call("skdmProcess", map[string]any{"name": name, "sender": sender, "body": msg}, nil)
}

// InspectSenderKeyDistribution parses a SenderKeyDistributionMessage with
// libsignal.
func (o *Oracle) InspectSenderKeyDistribution(msg []byte) (SenderKeyDistributionInfo, error) {
	o.t.Helper()
	var info SenderKeyDistributionInfo
	err := o.call("skdmInspect", map[string]any{"body": msg}, &info)
	return info, err
}

// NewSenderKeyDistribution encodes a SenderKeyDistributionMessage (version
// 3) from its fields with libsignal's own encoder. signingKey is a
// serialized public key (0x05 || 32 bytes).
func (o *Oracle) NewSenderKeyDistribution(distributionID string, chainID, iteration uint32, chainKey, signingKey []byte) []byte {
	o.t.Helper()
	var r struct {
		Body []byte `json:"body"`
	}
	o.must("skdmNew", map[string]any{
		"distributionId": distributionID, "chainId": chainID, "iteration": iteration,
		"chainKey": chainKey, "signingKey": signingKey,
	}, &r)
	return r.Body
}

// GroupEncrypt encrypts plaintext on the party's own chain for
// distributionID and returns the SenderKeyMessage. It fails (with *Error)
// when the party has no chain there yet.
func (o *Oracle) GroupEncrypt(name, distributionID string, plaintext []byte) ([]byte, error) {
	o.t.Helper()
	var r struct {
		Type int    `json:"type"`
		Body []byte `json:"body"`
	}
	if err := o.call("groupEncrypt", map[string]any{"name": name, "distributionId": distributionID, "plaintext": plaintext}, &r); err != nil {
		return nil, err
	}
	if r.Type != TypeSenderKey {
		o.t.Fatalf("libsignaloracle: groupEncrypt returned message type %d, want %d", r.Type, TypeSenderKey)
	}
	return r.Body, nil
}

// GroupDecrypt decrypts a SenderKeyMessage from sender. A message that
// libsignal rejects returns *Error.
func (o *Oracle) GroupDecrypt(name string, sender Address, msg []byte) ([]byte, error) {
	o.t.Helper()
	var r struct {
		Plaintext []byte `json:"plaintext"`
	}
	if err := o.call("groupDecrypt", map[string]any{"name": name, "sender": sender, "body": msg}, &r); err != nil {
		return nil, err
	}
	if r.Plaintext == nil {
		r.Plaintext = []byte{}
	}
	return r.Plaintext, nil
}

// InspectSenderKeyMessage parses a SenderKeyMessage with libsignal and, if
// signingKey is not nil, verifies its signature with it.
func (o *Oracle) InspectSenderKeyMessage(msg, signingKey []byte) (SenderKeyMessageInfo, error) {
	o.t.Helper()
	args := map[string]any{"body": msg}
	if signingKey != nil {
		args["signingKey"] = signingKey
	}
	var info SenderKeyMessageInfo
	err := o.call("skmInspect", args, &info)
	return info, err
}

// NewSenderKeyMessage encodes and signs a SenderKeyMessage (version 3)
// with libsignal's own encoder; ciphertext is used as given. privateKey is
// a serialized private key (32 bytes).
func (o *Oracle) NewSenderKeyMessage(distributionID string, chainID, iteration uint32, ciphertext, privateKey []byte) []byte {
	o.t.Helper()
	var r struct {
		Body []byte `json:"body"`
	}
	if ciphertext == nil {
		ciphertext = []byte{} // base64 "", not null
	}
	o.must("skmNew", map[string]any{
		"distributionId": distributionID, "chainId": chainID, "iteration": iteration,
		"ciphertext": ciphertext, "privateKey": privateKey,
	}, &r)
	return r.Body
}

// SenderKeyRecord returns the party's serialized SenderKeyRecord for
// (sender, distributionID), or nil if it has none. For the party's own
// address it holds the private signing key: never log it.
func (o *Oracle) SenderKeyRecord(name string, sender Address, distributionID string) []byte {
	o.t.Helper()
	var r struct {
		Record []byte `json:"record"`
	}
	o.must("senderKeyRecord", map[string]any{"name": name, "sender": sender, "distributionId": distributionID}, &r)
	return r.Record
}

// SetSenderKeyRecord replaces the party's SenderKeyRecord for (sender,
// distributionID) with a serialized one, or returns libsignal's error if
// it cannot deserialize it.
func (o *Oracle) SetSenderKeyRecord(name string, sender Address, distributionID string, record []byte) error {
	o.t.Helper()
	return o.call("setSenderKeyRecord", map[string]any{
		"name": name, "sender": sender, "distributionId": distributionID, "record": record,
	}, nil)
}
