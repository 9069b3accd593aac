package pebblestore

import (
	"bytes"
	"encoding/binary"

	"github.com/cockroachdb/pebble/v2"

	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/internal/batchrules"
)

func be64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// queueCounts holds every device's queue length in memory, for the queue
// limit and QueueDepth: counted from the queue keys at Open, changed only
// by a commit that is durable. Only this process writes the database
// (sqlite.Open holds an exclusive lock on the data directory's store).
type queueCounts struct{ batchrules.QueueCounts }

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
	qc.Set(n, total)
	return nil
}
