package server_test

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/link"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/wire"
)

// beforeRegistering is every request a device without an account may make.
var beforeRegistering = map[protoreflect.Name]bool{"register": true, "ping": true, "get_endpoints": true, "signup_challenge": true}

// wellFormed is a request of each kind that passes wire's checks, so that
// what answers it is the server's own.
var wellFormed = map[protoreflect.Name]proto.Message{
	"lookup":       &wire.LookupRequest{Username: "bob"},
	"send":         &wire.SendRequest{Recipient: "bob", ClientMessageId: make([]byte, wire.ClientIDSize), Payload: []byte("x")},
	"set_keys":     &wire.SetKeysRequest{},
	"get_bundles":  &wire.GetBundlesRequest{Username: "bob"},
	"upload":       &wire.UploadRequest{StartSize: 10},
	"download":     &wire.DownloadRequest{BlobId: make([]byte, wire.BlobIDSize), Length: 1},
	"group_change": &wire.GroupChangeRequest{GroupId: make([]byte, wire.GroupIDSize), SignedChange: []byte("x")},
	"group_log":    &wire.GroupLogRequest{GroupId: make([]byte, wire.GroupIDSize)},
	"group_send":   &wire.GroupSendRequest{GroupId: make([]byte, wire.GroupIDSize), ClientMessageId: make([]byte, wire.ClientIDSize), Payload: []byte("x")},
}

// everyRequest sends each kind of request wire.Request can carry (found by
// reflection: a new kind fails this test until it is listed above), well
// formed, and returns the error code of each answer by kind.
func everyRequest(t *testing.T, lc *link.Conn) map[protoreflect.Name]wire.ErrorCode {
	t.Helper()
	codes := make(map[protoreflect.Name]wire.ErrorCode)
	kinds := (&wire.Request{}).ProtoReflect().Descriptor().Oneofs().ByName("body")
	for i := range kinds.Fields().Len() {
		fd := kinds.Fields().Get(i)
		if beforeRegistering[fd.Name()] {
			continue
		}
		body, ok := wellFormed[fd.Name()]
		if !ok {
			t.Fatalf("no well-formed %s request to try: add one to wellFormed (and to beforeRegistering if a device without an account may make it)", fd.Name())
		}
		req := &wire.Request{Id: uint64(100 + i)}
		req.ProtoReflect().Set(fd, protoreflect.ValueOfMessage(body.ProtoReflect()))
		b, err := proto.Marshal(&wire.ClientFrame{Body: &wire.ClientFrame_Request{Request: req}})
		if err != nil {
			t.Fatal(err)
		}
		if err := lc.WriteMessage(b); err != nil {
			t.Fatalf("%s: %v", fd.Name(), err)
		}
		for {
			msg, err := lc.ReadMessage()
			if err != nil {
				t.Fatalf("%s: no answer: %v", fd.Name(), err)
			}
			f, err := wire.DecodeServerFrame(msg)
			if err != nil {
				t.Fatal(err)
			}
			if r := f.GetResponse(); r != nil && r.GetId() == req.Id {
				codes[fd.Name()] = r.GetError().GetCode()
				break
			}
		}
	}
	if len(codes) < 9 {
		t.Fatalf("only %d kinds of request found: %v", len(codes), codes)
	}
	return codes
}

// A device without an account may register, ping and fetch the endpoint
// list, and nothing else: every other request, downloads and uploads and
// key bundles included, is refused as unauthenticated. The same requests
// from a registered device get past that check.
func TestUnregisteredDeviceCanOnlyRegister(t *testing.T) {
	s := servertest.Start(t, server.Config{})
	s.Register(t, "bob")
	anon := rawLink(t, s, servertest.NewKey(t), link.Config{IdleTimeout: wait})
	for kind, code := range everyRequest(t, anon) {
		if code != wire.ErrorCode_ERROR_CODE_UNAUTHENTICATED {
			t.Errorf("%s from an unregistered device: answered %v, want UNAUTHENTICATED", kind, code)
		}
	}

	reg := rawLink(t, s, servertest.NewKey(t), link.Config{IdleTimeout: wait})
	b, _ := proto.Marshal(&wire.ClientFrame{Body: &wire.ClientFrame_Request{Request: &wire.Request{Id: 1,
		Body: &wire.Request_Register{Register: &wire.RegisterRequest{Username: "carol"}}}}})
	if err := reg.WriteMessage(b); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := reg.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		f, _ := wire.DecodeServerFrame(msg)
		if r := f.GetResponse(); r != nil {
			if r.GetRegister() == nil {
				t.Fatalf("register: %v", f)
			}
			break
		}
	}
	for kind, code := range everyRequest(t, reg) {
		if code == wire.ErrorCode_ERROR_CODE_UNAUTHENTICATED {
			t.Errorf("%s from a registered device: refused as unauthenticated", kind)
		}
	}
}
