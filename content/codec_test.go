package content

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

func TestRoundTrip(t *testing.T) {
	at := time.UnixMilli(1_765_000_000_123)
	b, err := EncodeText("héllo", at)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Decode(b)
	if err != nil || c.GetText().GetBody() != "héllo" || c.GetTimestampMs() != uint64(at.UnixMilli()) {
		t.Fatalf("Decode = %v, %v", c, err)
	}
	c, err = Decode(EncodeTyping(true))
	if err != nil || !c.GetTyping().GetStarted() {
		t.Fatalf("typing: %v, %v", c, err)
	}
	if _, err := EncodeText(strings.Repeat("x", MaxText+1), at); !errors.Is(err, ErrTextTooLong) {
		t.Fatalf("oversized text: %v", err)
	}
	if _, err := Decode([]byte{0x0a, 0x05, 0x0a, 0x03, 0xff, 0xfe, 0xfd}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("invalid UTF-8: %v", err)
	}
	// A transcript keeps the time the message was written.
	s, err := EncodeSent("bob", [16]byte{1}, c2(t, b))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := Decode(s); err != nil || c.GetSent().GetTimestampMs() != uint64(at.UnixMilli()) {
		t.Fatalf("transcript = %v, %v", c, err)
	}
}

func c2(t *testing.T, b []byte) *Content {
	c, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A read receipt names 1 to MaxReceiptIDs messages of 16 bytes each:
// anything else is malformed, so a peer cannot make a client look up junk.
func TestReadReceiptBounds(t *testing.T) {
	id := bytes.Repeat([]byte{7}, 16)
	b, err := EncodeReadReceipt([][]byte{id})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Decode(b)
	if err != nil || c.GetReceipt().GetKind() != Receipt_KIND_READ || !bytes.Equal(c.GetReceipt().GetMessageIds()[0], id) {
		t.Fatalf("Decode = %v, %v", c, err)
	}
	if _, err := EncodeReadReceipt(nil); err == nil {
		t.Fatal("empty receipt encoded")
	}
	bad := map[string]*Receipt{
		"no ids":       {Kind: Receipt_KIND_READ},
		"short id":     {Kind: Receipt_KIND_READ, MessageIds: [][]byte{id[:15]}},
		"too many ids": {Kind: Receipt_KIND_READ, MessageIds: slicesRepeat(id, MaxReceiptIDs+1)},
	}
	for name, r := range bad {
		b, _ := proto.Marshal(&Content{Body: &Content_Receipt{Receipt: r}})
		if _, err := Decode(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Decode = %v, want ErrMalformed", name, err)
		}
	}
	if _, err := Decode(mustMarshal(t, &Content{Body: &Content_Receipt{Receipt: &Receipt{MessageIds: slicesRepeat(id, MaxReceiptIDs)}}})); err != nil {
		t.Errorf("a receipt of MaxReceiptIDs ids refused: %v", err)
	}
}

func slicesRepeat(id []byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = id
	}
	return out
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzDecode(f *testing.F) {
	b, _ := EncodeText("hi", time.UnixMilli(1))
	f.Add(b)
	f.Add(EncodeTyping(false))
	r, _ := EncodeReadReceipt([][]byte{make([]byte, 16)})
	f.Add(r)
	sk, _ := EncodeSenderKey([16]byte{1}, []byte{0x33, 1, 2})
	f.Add(sk)
	f.Add(EncodeSenderKeyRequest([16]byte{2}))
	g, _ := InGroup(b, [16]byte{3})
	f.Add(g)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			return
		}
		if g := c.GetGroupId(); g != nil && len(g) != GroupIDSize {
			t.Fatal("a bad group id accepted")
		}
		if sk := c.GetSenderKey(); sk != nil && (len(sk.GetGroupId()) != GroupIDSize || len(sk.GetDistribution()) == 0 || len(sk.GetDistribution()) > MaxDistribution) {
			t.Fatal("a bad sender key accepted")
		}
		if r := c.GetSenderKeyRequest(); r != nil && len(r.GetGroupId()) != GroupIDSize {
			t.Fatal("a bad sender key request accepted")
		}
		if len(c.GetText().GetBody()) > MaxText {
			t.Fatal("oversized text accepted")
		}
		for _, id := range c.GetReceipt().GetMessageIds() {
			if len(id) != 16 {
				t.Fatal("receipt with a bad id accepted")
			}
		}
	})
}

// Group fields: a 16-byte group id, a sender key of 1 to MaxDistribution
// bytes for a 16-byte group; anything else is malformed.
func TestGroupFields(t *testing.T) {
	b, _ := EncodeText("hi", time.UnixMilli(1))
	g, err := InGroup(b, [16]byte{9})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := Decode(g); err != nil || !bytes.Equal(c.GetGroupId(), append([]byte{9}, make([]byte, 15)...)) || c.GetText().GetBody() != "hi" {
		t.Fatalf("in a group: %v, %v", c, err)
	}
	sk, err := EncodeSenderKey([16]byte{1}, []byte{0x33})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := Decode(sk); err != nil || len(c.GetSenderKey().GetGroupId()) != 16 {
		t.Fatalf("sender key: %v, %v", c, err)
	}
	if _, err := EncodeSenderKey([16]byte{1}, make([]byte, MaxDistribution+1)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("an oversized sender key: %v", err)
	}
	if c, err := Decode(EncodeSenderKeyRequest([16]byte{2})); err != nil || len(c.GetSenderKeyRequest().GetGroupId()) != 16 {
		t.Fatalf("sender key request: %v, %v", c, err)
	}
	bad := map[string]*Content{
		"short group":             {Body: &Content_Text{Text: &Text{Body: "x"}}, GroupId: make([]byte, 15)},
		"sender key, short group": {Body: &Content_SenderKey{SenderKey: &SenderKeyDistribution{GroupId: make([]byte, 15), Distribution: []byte{1}}}},
		"sender key, empty":       {Body: &Content_SenderKey{SenderKey: &SenderKeyDistribution{GroupId: make([]byte, 16)}}},
		"sender key, too long":    {Body: &Content_SenderKey{SenderKey: &SenderKeyDistribution{GroupId: make([]byte, 16), Distribution: make([]byte, MaxDistribution+1)}}},
		"request, long group":     {Body: &Content_SenderKeyRequest{SenderKeyRequest: &SenderKeyRequest{GroupId: make([]byte, 17)}}},
	}
	for name, c := range bad {
		if _, err := Decode(mustMarshal(t, c)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Decode = %v, want ErrMalformed", name, err)
		}
	}
}

func validAvatar() *Attachment {
	return &Attachment{BlobId: make([]byte, 16), Key: make([]byte, 32), Digest: make([]byte, 32), Size: 100, BlobSize: 150, Mime: "image/png"}
}

func TestAvatar(t *testing.T) {
	b, err := EncodeAvatar(validAvatar())
	if err != nil {
		t.Fatal(err)
	}
	if a, err := DecodeAvatar(b); err != nil || a.GetSize() != 100 || a.GetMime() != "image/png" {
		t.Fatalf("DecodeAvatar = %v, %v", a, err)
	}
	for name, bad := range map[string]func(*Attachment){
		"short blob id": func(a *Attachment) { a.BlobId = a.BlobId[:15] },
		"short key":     func(a *Attachment) { a.Key = a.Key[:31] },
		"no digest":     func(a *Attachment) { a.Digest = nil },
		"empty":         func(a *Attachment) { a.Size = 0 },
		"too large":     func(a *Attachment) { a.Size, a.BlobSize = MaxAvatar+1, MaxAvatar+100 },
		"blob smaller":  func(a *Attachment) { a.BlobSize = 99 },
		"not an image":  func(a *Attachment) { a.Mime = "text/html" },
		"a thumbnail":   func(a *Attachment) { a.Thumbnail = []byte{1} },
	} {
		a := validAvatar()
		bad(a)
		if _, err := EncodeAvatar(a); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzDecodeAvatar(f *testing.F) {
	b, _ := EncodeAvatar(validAvatar())
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := DecodeAvatar(b)
		if err != nil {
			return
		}
		if len(a.GetKey()) != 32 || len(a.GetDigest()) != 32 || a.GetSize() > MaxAvatar || a.GetSize() == 0 {
			t.Fatal("a bad avatar accepted")
		}
	})
}
