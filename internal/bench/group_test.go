package bench

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// TestGroup runs the group scenario briefly against a real server: every
// copy of every acknowledged message must reach every other member, every
// member decrypts what it gets, and the storage and CPU readings are there.
func TestGroup(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s := servertest.Start(t, server.Config{Metrics: server.NewMetrics(reg)})
	admin := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const groups, members = 3, 6
	r, err := RunGroup(ctx, s.Invite, GroupOptions{
		Groups: groups, Members: members, Senders: 2, Verify: -1,
		Rate: 60, Duration: time.Second, Drain: 20 * time.Second,
		Admin:      strings.TrimPrefix(admin.URL, "http://"),
		StoreUsage: s.Store.LiveBytes, StoreMessages: 30,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", r.Text())
	copies := int64(members - 1)
	if r.Sent == 0 || r.Acked != r.Sent {
		t.Errorf("sent %d, acked %d: want all acknowledged", r.Sent, r.Acked)
	}
	if r.Expected != r.Acked*copies || r.Delivered != r.Expected || r.Complete != r.Acked {
		t.Errorf("expected %d copies (%d × %d), delivered %d, complete %d of %d", r.Expected, r.Acked, copies, r.Delivered, r.Complete, r.Acked)
	}
	if r.Copy.Count != r.Delivered || r.Last.Count != r.Complete || r.Encrypt.Count != r.Acked {
		t.Errorf("histograms hold %d, %d and %d values, want %d, %d and %d", r.Copy.Count, r.Last.Count, r.Encrypt.Count, r.Delivered, r.Complete, r.Acked)
	}
	// Every member verifies: each copy is decrypted and checked.
	if r.Decrypted != r.Delivered || r.DecryptExpected != r.Delivered {
		t.Errorf("decrypted %d of %d, delivered %d", r.Decrypted, r.DecryptExpected, r.Delivered)
	}
	if r.Receipts != r.Delivered {
		t.Errorf("%d receipts for %d copies", r.Receipts, r.Delivered)
	}
	if r.Errors != 0 || r.Duplicates != 0 || r.Unexpected != 0 || r.Missing != 0 || r.Late != 0 {
		t.Errorf("%d errors (%v), %d duplicates, %d unexpected, %d missing, %d late", r.Errors, r.ErrorKinds, r.Duplicates, r.Unexpected, r.Missing, r.Late)
	}
	// Every member but the creator's device learnt of its group.
	if r.ChangesDelivered < groups*(members-1) {
		t.Errorf("%d group changes delivered, want at least %d", r.ChangesDelivered, groups*(members-1))
	}
	if r.Last.Max < r.Copy.P50 || r.CiphertextBytes <= r.Size || r.Encrypt.Max <= 0 {
		t.Errorf("last member max %v, copy p50 %v, ciphertext %d bytes, encryption max %v", r.Last.Max, r.Copy.P50, r.CiphertextBytes, r.Encrypt.Max)
	}
	if r.ServerCPUS <= 0 || r.ServerCPUPerCopyUs <= 0 {
		t.Errorf("server CPU %.3fs, %.1f µs per copy", r.ServerCPUS, r.ServerCPUPerCopyUs)
	}
	st := r.Storage
	if st == nil || st.Skipped != "" {
		t.Fatalf("no storage measurement: %+v", st)
	}
	if st.Delivered != int64(st.Messages*st.Recipients) || st.Recipients != members-1 {
		t.Errorf("held copies delivered %d of %d × %d", st.Delivered, st.Messages, st.Recipients)
	}
	// The payload is stored once: well under two payloads per message.
	if d := st.Payload - float64(r.CiphertextBytes); d < -8 || d > 8 || st.PerMessage < st.Payload || st.PerMessage > 2*st.Payload {
		t.Errorf("%.0f bytes stored per message of %.0f-byte payloads (%d in the timed part)", st.PerMessage, st.Payload, r.CiphertextBytes)
	}
}

func TestGroupOptions(t *testing.T) {
	for _, o := range []GroupOptions{
		{Members: 1},
		{Members: 1025},
		{Members: 4, Senders: 5},
		{Groups: -1},
		{Size: 8},
	} {
		if err := o.setDefaults(); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	o := GroupOptions{Members: 50}
	if err := o.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if o.Groups != 1 || o.Senders != 8 || o.Verify != 1 || o.Size != 1024 || o.StoreMessages != 200 {
		t.Errorf("defaults %+v", o)
	}
}
