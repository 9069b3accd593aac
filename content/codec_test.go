package content

import (
	"errors"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	b, err := EncodeText("héllo")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Decode(b)
	if err != nil || c.GetText().GetBody() != "héllo" {
		t.Fatalf("Decode = %v, %v", c, err)
	}
	c, err = Decode(EncodeTyping(true))
	if err != nil || !c.GetTyping().GetStarted() {
		t.Fatalf("typing: %v, %v", c, err)
	}
	if _, err := EncodeText(strings.Repeat("x", MaxText+1)); err == nil {
		t.Fatal("oversized text encoded")
	}
	if _, err := Decode([]byte{0x0a, 0x05, 0x0a, 0x03, 0xff, 0xfe, 0xfd}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("invalid UTF-8: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	b, _ := EncodeText("hi")
	f.Add(b)
	f.Add(EncodeTyping(false))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			return
		}
		if len(c.GetText().GetBody()) > MaxText {
			t.Fatal("oversized text accepted")
		}
	})
}
