package bench

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/internal/censor"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/transport/obfs"
)

// transportServer is a server on tcp, obfs and tls, each behind a Path that
// counts its connections, and an invite listing all three, tcp first.
func transportServer(t *testing.T) (invite.Invite, map[string]*censor.Path) {
	t.Helper()
	s := servertest.Start(t, server.Config{})
	paths := map[string]*censor.Path{}
	var list []endpoints.Endpoint
	for i, name := range []string{"tcp", "obfs", "tls"} {
		e := s.TransportEndpoints(t, obfs.Config{})[name]
		p, err := censor.NewPath(e.Address)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		e.Address, e.Priority = p.Addr(), i
		paths[name] = p
		list = append(list, e)
	}
	signed, err := endpoints.Sign(endpoints.List{Version: 1, Issued: time.Now(), Endpoints: list}, curve.PrivateKey(s.Key.Private))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := proto.Marshal(signed)
	if err != nil {
		t.Fatal(err)
	}
	return invite.Invite{ServerKey: s.Invite.ServerKey, Endpoints: raw}, paths
}

// --transport drives the transport it names, and only it.
func TestScenariosDriveTheChosenTransport(t *testing.T) {
	inv, paths := transportServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	flows := func() map[string]int64 {
		m := map[string]int64{}
		for name, p := range paths {
			m[name] = p.Flows()
		}
		return m
	}
	for _, name := range []string{"obfs", "tls", "tcp"} {
		before := flows()
		r, err := RunHandshake(ctx, inv, HandshakeOptions{Connections: 12, Concurrency: 4, Transport: name})
		if err != nil || r.OK != 12 {
			t.Fatalf("%s: %v, %+v", name, err, r)
		}
		after := flows()
		for other := range paths {
			want := int64(0)
			if other == name {
				want = 12
			}
			if got := after[other] - before[other]; got != want {
				t.Errorf("handshake --transport %s: %d connections over %s, want %d", name, got, other, want)
			}
		}
	}
	before := flows()
	r, err := RunChat(ctx, inv, ChatOptions{Clients: 4, Rate: 40, Duration: 500 * time.Millisecond, Size: 256, Transport: "obfs"})
	if err != nil {
		t.Fatal(err)
	}
	checkChat(t, r)
	if after := flows(); after["obfs"]-before["obfs"] < 4 || after["tcp"] != before["tcp"] || after["tls"] != before["tls"] {
		t.Errorf("chat --transport obfs: connections before %v, after %v", before, after)
	}
	if _, err := RunHandshake(ctx, inv, HandshakeOptions{Connections: 1, Transport: "quic"}); err == nil {
		t.Error("a transport the invite does not offer: no error")
	}
}
