package ratchet

import (
	"encoding/binary"
	"fmt"

	"github.com/magpie-im/magpie/e2e/curve"
)

// Record encoding (Magpie's own, not libsignal's storage.proto):
//
//	record  = magic "MGSR" ‖ u8 format(1) ‖ u8 hasCurrent ‖ [state]
//	          ‖ u8 nPrevious ‖ state*nPrevious
//	state   = u8 version ‖ localIdentity 32 ‖ remoteIdentity 32
//	          ‖ u32 localRegID ‖ u32 remoteRegID ‖ aliceBaseKey 32
//	          ‖ rootKey 32 ‖ u32 previousCounter
//	          ‖ senderPriv 32 ‖ senderPub 32 ‖ senderChainKey 32 ‖ u32 senderIndex
//	          ‖ u8 nReceivers ‖ chain*nReceivers ‖ u8 hasPending ‖ [pending]
//	chain   = ratchetKey 32 ‖ key 32 ‖ u32 index ‖ u16 nSkipped ‖ (u32 index ‖ seed 32)*nSkipped
//	pending = u8 hasPreKeyID ‖ [u32 preKeyID] ‖ u32 signedPreKeyID ‖ baseKey 32
//	          ‖ u32 kyberPreKeyID ‖ u16 len ‖ kyberCiphertext ‖ i64 created
//
// Integers are big-endian. Every count is checked against the package
// limits when decoding, and trailing bytes are an error.

const (
	recordMagic  = "MGSR"
	recordFormat = 1
	// maxKyberCiphertext bounds the stored ciphertext (1 type byte +
	// 1568 for Kyber1024), with room to spare.
	maxKyberCiphertext = 4096
)

// MarshalBinary encodes the Record. It contains private keys: store it as
// the secret it is.
func (r *Record) MarshalBinary() ([]byte, error) {
	b := append([]byte(recordMagic), recordFormat)
	if r.current != nil {
		b = append(b, 1)
		b = appendState(b, r.current)
	} else {
		b = append(b, 0)
	}
	b = append(b, byte(len(r.previous)))
	for _, s := range r.previous {
		b = appendState(b, s)
	}
	return b, nil
}

func appendState(b []byte, s *state) []byte {
	b = append(b, s.version)
	b = append(b, s.localIdentity[:]...)
	b = append(b, s.remoteIdentity[:]...)
	b = binary.BigEndian.AppendUint32(b, s.localRegID)
	b = binary.BigEndian.AppendUint32(b, s.remoteRegID)
	b = append(b, s.aliceBaseKey[:]...)
	b = append(b, s.rootKey[:]...)
	b = binary.BigEndian.AppendUint32(b, s.previousCounter)
	b = append(b, s.senderRatchet.Private[:]...)
	b = append(b, s.senderRatchet.Public[:]...)
	b = append(b, s.senderChainKey[:]...)
	b = binary.BigEndian.AppendUint32(b, s.senderIndex)
	b = append(b, byte(len(s.receivers)))
	for _, c := range s.receivers {
		b = append(b, c.ratchetKey[:]...)
		b = append(b, c.key[:]...)
		b = binary.BigEndian.AppendUint32(b, c.index)
		b = binary.BigEndian.AppendUint16(b, uint16(len(c.skipped)))
		for _, k := range c.skipped {
			b = binary.BigEndian.AppendUint32(b, k.index)
			b = append(b, k.seed[:]...)
		}
	}
	if p := s.pending; p != nil {
		b = append(b, 1)
		if p.preKeyID != nil {
			b = append(b, 1)
			b = binary.BigEndian.AppendUint32(b, *p.preKeyID)
		} else {
			b = append(b, 0)
		}
		b = binary.BigEndian.AppendUint32(b, p.signedPreKeyID)
		b = append(b, p.baseKey[:]...)
		b = binary.BigEndian.AppendUint32(b, p.kyberPreKeyID)
		b = binary.BigEndian.AppendUint16(b, uint16(len(p.kyberCiphertext)))
		b = append(b, p.kyberCiphertext...)
		b = binary.BigEndian.AppendUint64(b, uint64(p.created))
	} else {
		b = append(b, 0)
	}
	return b
}

// UnmarshalBinary decodes what MarshalBinary produced, replacing r's
// contents. On error r is unchanged.
func (r *Record) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	if string(d.bytes(len(recordMagic))) != recordMagic {
		return fmt.Errorf("%w: bad magic", ErrInvalidRecord)
	}
	if f := d.u8(); f != recordFormat {
		return fmt.Errorf("%w: format %d", ErrInvalidRecord, f)
	}
	var n Record
	if d.flag() {
		n.current = d.state()
	}
	np := int(d.u8())
	if np > ArchivedStatesMax {
		d.fail("too many archived states")
	}
	for i := 0; i < np && d.err == nil; i++ {
		n.previous = append(n.previous, d.state())
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return fmt.Errorf("%w: %s", ErrInvalidRecord, d.err.Error())
	}
	*r = n
	return nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(msg string) {
	if d.err == nil {
		d.err = fmt.Errorf("%s", msg)
	}
	d.b = nil
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil || len(d.b) < n {
		d.fail("truncated")
		return make([]byte, n)
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *decoder) u8() uint8   { return d.bytes(1)[0] }
func (d *decoder) u16() uint16 { return binary.BigEndian.Uint16(d.bytes(2)) }
func (d *decoder) u32() uint32 { return binary.BigEndian.Uint32(d.bytes(4)) }
func (d *decoder) u64() uint64 { return binary.BigEndian.Uint64(d.bytes(8)) }
func (d *decoder) b32() (out [32]byte) {
	copy(out[:], d.bytes(32))
	return out
}

func (d *decoder) flag() bool {
	switch d.u8() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail("bad flag")
	return false
}

func (d *decoder) state() *state {
	s := &state{version: d.u8()}
	if s.version != CurrentVersion {
		d.fail("bad session version")
	}
	s.localIdentity = d.b32()
	s.remoteIdentity = d.b32()
	s.localRegID = d.u32()
	s.remoteRegID = d.u32()
	s.aliceBaseKey = d.b32()
	s.rootKey = d.b32()
	s.previousCounter = d.u32()
	s.senderRatchet.Private = d.b32()
	s.senderRatchet.Public = d.b32()
	s.senderChainKey = d.b32()
	s.senderIndex = d.u32()
	nr := int(d.u8())
	if nr > MaxReceiverChains {
		d.fail("too many receiver chains")
	}
	for i := 0; i < nr && d.err == nil; i++ {
		c := chain{ratchetKey: d.b32(), key: d.b32(), index: d.u32()}
		ns := int(d.u16())
		if ns > MaxMessageKeys {
			d.fail("too many skipped keys")
		}
		for j := 0; j < ns && d.err == nil; j++ {
			c.skipped = append(c.skipped, skippedKey{index: d.u32(), seed: d.b32()})
		}
		s.receivers = append(s.receivers, c)
	}
	if d.flag() {
		p := &pending{}
		if d.flag() {
			id := d.u32()
			p.preKeyID = &id
		}
		p.signedPreKeyID = d.u32()
		p.baseKey = curve.PublicKey(d.b32())
		p.kyberPreKeyID = d.u32()
		n := int(d.u16())
		if n > maxKyberCiphertext {
			d.fail("Kyber ciphertext too long")
		}
		p.kyberCiphertext = append([]byte(nil), d.bytes(n)...)
		p.created = int64(d.u64())
		s.pending = p
	}
	return s
}
