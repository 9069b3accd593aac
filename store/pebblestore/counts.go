package pebblestore

import (
	"bytes"
	"encoding/binary"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"github.com/magpie-im/magpie/store"
)

func be64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// queueCounts holds every device's queue length in memory, for the queue
// limit and QueueDepth: counted from the queue keys at Open, changed only
// by a commit that is durable. Only this process writes the database
// (sqlite.Open holds an exclusive lock on the data directory's store).
type queueCounts struct {
	mu    sync.Mutex
	n     map[store.DeviceAddr]int64
	total int64
}

func (qc *queueCounts) load(db *pebble.DB) error {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{tQueue}, UpperBound: []byte{tQueue + 1}})
	if err != nil {
		return err
	}
	n := make(map[store.DeviceAddr]int64)
	var (
		total   int64
		lastDev []byte
		last    store.DeviceAddr
	)
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()[1:]
		devPart := k[:len(k)-8]
		if !bytes.Equal(devPart, lastDev) {
			d, _, err := readDev(devPart)
			if err != nil {
				it.Close()
				return err
			}
			last, lastDev = d, append(lastDev[:0], devPart...)
		}
		n[last]++
		total++
	}
	if err := it.Close(); err != nil {
		return err
	}
	qc.mu.Lock()
	qc.n, qc.total = n, total
	qc.mu.Unlock()
	return nil
}

func (qc *queueCounts) get(d store.DeviceAddr) int64 {
	qc.mu.Lock()
	defer qc.mu.Unlock()
	return qc.n[d]
}

func (qc *queueCounts) totalNow() int64 {
	qc.mu.Lock()
	defer qc.mu.Unlock()
	return qc.total
}

func (qc *queueCounts) apply(delta map[store.DeviceAddr]int64) {
	qc.mu.Lock()
	defer qc.mu.Unlock()
	for d, k := range delta {
		qc.total += k
		if v := qc.n[d] + k; v > 0 {
			qc.n[d] = v
		} else {
			delete(qc.n, d)
		}
	}
}
