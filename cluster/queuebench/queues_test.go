package queuebench

import (
	"context"
	"fmt"
	"time"
)

// queues is one engine's side of the workloads: durable queues, one per
// device. Devices are numbered; senders are devices too (their receipts
// wait in their queues), named apart from the recipients.
type queues interface {
	// enqueue queues one 1 KiB message from sender for each device in to,
	// with ids first, first+1, … (a repeated id is a duplicate), and
	// returns once every one is acknowledged as durable.
	enqueue(ctx context.Context, sender int, first uint64, to []int) error
	// take reads up to page of the oldest messages waiting for dev and
	// acknowledges them durably, each acknowledgement queueing a receipt
	// for the message's sender (as the store's does), and returns how many
	// it took.
	take(ctx context.Context, dev device, page int) (int, error)
	// otherCPU is the CPU time the engine's processes other than this one
	// have used so far.
	otherCPU() time.Duration
}

// device names a queue: a recipient (d0, d1, …) or a sender (s0, s1, …).
type device struct {
	sender bool
	n      int
}

func recipient(n int) device { return device{n: n} }
func sender(n int) device    { return device{sender: true, n: n} }

// devices lists recipients d0…d(recipients-1), then senders s0….
func devices(recipients, senders int) []device {
	var devs []device
	for i := range recipients {
		devs = append(devs, recipient(i))
	}
	for i := range senders {
		devs = append(devs, sender(i))
	}
	return devs
}

func (d device) String() string {
	if d.sender {
		return fmt.Sprintf("s%d", d.n)
	}
	return fmt.Sprintf("d%d", d.n)
}

// payload is every message's body: 1 KiB, as the store benchmarks use.
var payload = make([]byte, 1024)

// expiry is how long a message may wait, in both engines.
const expiry = time.Hour
