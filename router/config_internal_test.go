package router

import (
	"testing"
	"time"
)

// Zero fields take the documented defaults; fields that are set are kept.
func TestConfigDefaults(t *testing.T) {
	c := Config{}.withDefaults()
	if c.QueueLimit != 10_000 || c.SenderShare != 2_500 || c.TTL != 30*24*time.Hour || c.Window != 256 ||
		c.WindowBytes != 4<<20 || c.MaxBatch != 1024 || c.CommitDelay != time.Millisecond || c.Sweep != time.Minute ||
		c.Recheck != 10*time.Second || c.Now == nil || c.Logger == nil || c.recheckTicker == nil {
		t.Fatalf("defaults: %+v", c)
	}
	// The sender share is a quarter of the queue limit, and at least 1.
	if c := (Config{QueueLimit: 100}).withDefaults(); c.SenderShare != 25 {
		t.Errorf("sender share of a 100-item queue: %d, want 25", c.SenderShare)
	}
	if c := (Config{QueueLimit: 3}).withDefaults(); c.SenderShare != 1 {
		t.Errorf("sender share of a 3-item queue: %d, want 1", c.SenderShare)
	}
	set := Config{QueueLimit: 7, SenderShare: -1, TTL: time.Hour, Window: 3, WindowBytes: 5, MaxBatch: 9,
		CommitDelay: time.Second, Sweep: time.Hour, Recheck: -1}
	c = set.withDefaults()
	if c.QueueLimit != 7 || c.SenderShare != -1 || c.TTL != time.Hour || c.Window != 3 || c.WindowBytes != 5 ||
		c.MaxBatch != 9 || c.CommitDelay != time.Second || c.Sweep != time.Hour || c.Recheck != -1 {
		t.Fatalf("options set: %+v, kept as %+v", set, c)
	}
}
