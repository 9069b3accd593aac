package wire

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"
)

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sendFrame(id uint64, to string, cid []byte, payload []byte) *ClientFrame {
	return &ClientFrame{Body: &ClientFrame_Request{Request: &Request{Id: id, Body: &Request_Send{Send: &SendRequest{
		Recipient: to, ClientMessageId: cid, Payload: payload,
	}}}}}
}

func TestDecodeClientFrame(t *testing.T) {
	cid := bytes.Repeat([]byte{1}, ClientIDSize)
	good := mustMarshal(t, sendFrame(7, "bob", cid, []byte("hi")))
	f, err := DecodeClientFrame(good)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.GetRequest().GetSend().GetRecipient(); got != "bob" {
		t.Fatalf("recipient = %q", got)
	}

	for name, tc := range map[string]struct {
		frame []byte
		code  ErrorCode // 0: not a RequestError
	}{
		"garbage":        {frame: []byte{0xff, 0xff, 0xff}},
		"empty":          {frame: nil},
		"too big":        {frame: make([]byte, MaxFrame+1)},
		"short id":       {frame: mustMarshal(t, sendFrame(1, "bob", cid[:3], nil)), code: ErrorCode_ERROR_CODE_BAD_REQUEST},
		"huge payload":   {frame: mustMarshal(t, sendFrame(1, "bob", cid, make([]byte, MaxPayload+1))), code: ErrorCode_ERROR_CODE_TOO_LARGE},
		"long recipient": {frame: mustMarshal(t, sendFrame(1, string(make([]byte, MaxNameLen+1)), cid, nil)), code: ErrorCode_ERROR_CODE_USERNAME_INVALID},
		"empty ack":      {frame: mustMarshal(t, &ClientFrame{Body: &ClientFrame_Ack{Ack: &Ack{}}})},
		"huge ack":       {frame: mustMarshal(t, &ClientFrame{Body: &ClientFrame_Ack{Ack: &Ack{Seqs: make([]uint64, MaxAckSeqs+1)}}})},
		"long challenge": {frame: mustMarshal(t, &ClientFrame{Body: &ClientFrame_Request{Request: &Request{Id: 9, Body: &Request_Register{Register: &RegisterRequest{Username: "alice", PowChallenge: make([]byte, PoWChallengeSize+1)}}}}}), code: ErrorCode_ERROR_CODE_BAD_REQUEST},
		"no body":        {frame: mustMarshal(t, &ClientFrame{Body: &ClientFrame_Request{Request: &Request{Id: 9}}}), code: ErrorCode_ERROR_CODE_BAD_REQUEST},
	} {
		_, err := DecodeClientFrame(tc.frame)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
			continue
		}
		var re *RequestError
		if tc.code != 0 {
			if !errors.As(err, &re) || re.Code != tc.code {
				t.Errorf("%s: err = %v, want RequestError code %v", name, err, tc.code)
			}
		} else if errors.As(err, &re) {
			t.Errorf("%s: err = %v, want a frame error", name, err)
		}
	}
}

func TestDecodeServerFrame(t *testing.T) {
	b := mustMarshal(t, &ServerFrame{Body: &ServerFrame_Push{Push: &Push{Body: &Push_QueueDrained{QueueDrained: &QueueDrained{}}}}})
	if _, err := DecodeServerFrame(b); err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeServerFrame(nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("empty frame: %v", err)
	}
}

// The fuzz targets check that no input panics the decoders, and that what
// decodes re-encodes to something that decodes the same.
func FuzzDecodeClientFrame(f *testing.F) {
	cid := bytes.Repeat([]byte{2}, ClientIDSize)
	f.Add(mustMarshal(f, sendFrame(1, "bob", cid, []byte("hello"))))
	f.Add(mustMarshal(f, &ClientFrame{Body: &ClientFrame_Ack{Ack: &Ack{Seqs: []uint64{1, 2, 3}}}}))
	f.Add(mustMarshal(f, &ClientFrame{Body: &ClientFrame_Request{Request: &Request{Id: 3, Body: &Request_Register{Register: &RegisterRequest{Username: "alice"}}}}}))
	f.Add([]byte{0x0a, 0x80})
	f.Add(mustMarshal(f, &ClientFrame{Body: &ClientFrame_Request{Request: &Request{Id: 4, Body: &Request_GroupSend{GroupSend: &GroupSendRequest{
		GroupId: make([]byte, GroupIDSize), ClientMessageId: cid, Payload: []byte("x")}}}}}))
	f.Add(mustMarshal(f, &ClientFrame{Body: &ClientFrame_Request{Request: &Request{Id: 5, Body: &Request_GroupChange{GroupChange: &GroupChangeRequest{
		GroupId: make([]byte, GroupIDSize), SignedChange: []byte("change")}}}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		frame, err := DecodeClientFrame(b)
		if err != nil {
			return
		}
		again, err := DecodeClientFrame(mustMarshal(t, frame))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !proto.Equal(frame, again) {
			t.Fatalf("re-decode differs")
		}
	})
}

func FuzzDecodeServerFrame(f *testing.F) {
	f.Add(mustMarshal(f, &ServerFrame{Body: &ServerFrame_Push{Push: &Push{Body: &Push_Envelope{Envelope: &Envelope{Seq: 4, Payload: []byte("x")}}}}}))
	f.Add(mustMarshal(f, &ServerFrame{Body: &ServerFrame_Response{Response: &Response{Id: 1, Error: &Error{Code: ErrorCode_ERROR_CODE_QUEUE_FULL}}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		frame, err := DecodeServerFrame(b)
		if err != nil {
			return
		}
		if _, err := DecodeServerFrame(mustMarshal(t, frame)); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

// The group requests' field rules: ids of the right size, payloads and
// changes within their bounds.
func TestGroupRequestRules(t *testing.T) {
	id16, cid := make([]byte, GroupIDSize), make([]byte, ClientIDSize)
	frame := func(r *Request) []byte {
		return mustMarshal(t, &ClientFrame{Body: &ClientFrame_Request{Request: r}})
	}
	for name, tc := range map[string]struct {
		frame []byte
		code  ErrorCode // 0: valid
	}{
		"change ok":        {frame(&Request{Body: &Request_GroupChange{GroupChange: &GroupChangeRequest{GroupId: id16, SignedChange: []byte{1}}}}), 0},
		"change short id":  {frame(&Request{Body: &Request_GroupChange{GroupChange: &GroupChangeRequest{GroupId: id16[:15], SignedChange: []byte{1}}}}), ErrorCode_ERROR_CODE_BAD_REQUEST},
		"change empty":     {frame(&Request{Body: &Request_GroupChange{GroupChange: &GroupChangeRequest{GroupId: id16}}}), ErrorCode_ERROR_CODE_TOO_LARGE},
		"change too big":   {frame(&Request{Body: &Request_GroupChange{GroupChange: &GroupChangeRequest{GroupId: id16, SignedChange: make([]byte, MaxGroupChange+1)}}}), ErrorCode_ERROR_CODE_TOO_LARGE},
		"log ok":           {frame(&Request{Body: &Request_GroupLog{GroupLog: &GroupLogRequest{GroupId: id16}}}), 0},
		"log no id":        {frame(&Request{Body: &Request_GroupLog{GroupLog: &GroupLogRequest{}}}), ErrorCode_ERROR_CODE_BAD_REQUEST},
		"send ok":          {frame(&Request{Body: &Request_GroupSend{GroupSend: &GroupSendRequest{GroupId: id16, ClientMessageId: cid, Payload: []byte{1}}}}), 0},
		"send no msg id":   {frame(&Request{Body: &Request_GroupSend{GroupSend: &GroupSendRequest{GroupId: id16, Payload: []byte{1}}}}), ErrorCode_ERROR_CODE_BAD_REQUEST},
		"send no group id": {frame(&Request{Body: &Request_GroupSend{GroupSend: &GroupSendRequest{ClientMessageId: cid, Payload: []byte{1}}}}), ErrorCode_ERROR_CODE_BAD_REQUEST},
		"send empty":       {frame(&Request{Body: &Request_GroupSend{GroupSend: &GroupSendRequest{GroupId: id16, ClientMessageId: cid}}}), ErrorCode_ERROR_CODE_TOO_LARGE},
		"send too big":     {frame(&Request{Body: &Request_GroupSend{GroupSend: &GroupSendRequest{GroupId: id16, ClientMessageId: cid, Payload: make([]byte, MaxPayload+1)}}}), ErrorCode_ERROR_CODE_TOO_LARGE},
	} {
		_, err := DecodeClientFrame(tc.frame)
		var re *RequestError
		switch {
		case tc.code == 0 && err != nil:
			t.Errorf("%s: %v, want valid", name, err)
		case tc.code != 0 && (!errors.As(err, &re) || re.Code != tc.code):
			t.Errorf("%s: %v, want RequestError code %v", name, err, tc.code)
		}
	}
}
