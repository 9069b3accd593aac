package pebblestore

import (
	"context"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/sqlite"
)

// A data directory from before queues moved here has them in magpie.db.
// Open moves them, seqs and all, in batches: the first marks the import
// as under way (metaImporting), the last, synced, marks it done
// (metaImported); only then are SQLite's tables emptied. An import that
// was cut short is started again on an emptied Pebble database (Open
// removes it), so no key is ever written twice, which the SingleDeletes
// of queue items rely on.
var (
	metaImporting = []byte{tMeta, 'i'}
	metaImported  = []byte{tMeta, 'd'}
)

// importBatchSize is how much an import batch holds before it is written.
const importBatchSize = 32 << 20

// interruptedImport reports whether db holds an import that was cut short.
func interruptedImport(db *pebble.DB) (bool, error) {
	_, closer, err := db.Get(metaImporting)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, closer.Close()
}

// importSQLite moves the queues from accounts into s.db, if it has any.
func (s *Store) importSQLite(ctx context.Context) error {
	has, err := s.Store.HasQueues(ctx)
	if err != nil || !has {
		return err
	}
	if _, closer, err := s.db.Get(metaImported); err == nil {
		closer.Close()
		// Imported, but cut short before SQLite's copy went.
		return s.Store.DropQueues(ctx)
	}
	if empty, err := isEmpty(s.db); err != nil {
		return err
	} else if !empty {
		return errors.New("both magpie.db and queues/ hold queues: this data directory was served with --store sqlite after --store pebble; restore it from a backup taken before")
	}
	s.log.Info("moving the queues from magpie.db to queues/ (Pebble); this happens once")
	im := &importer{db: s.db, b: s.db.NewBatch(), targets: make(map[uint64][]byte)}
	if err := im.b.Set(metaImporting, nil, nil); err != nil {
		return err
	}
	next, err := s.Store.ExportQueues(ctx, im)
	if err != nil {
		im.b.Close()
		return err
	}
	for id, t := range im.targets {
		if err := im.set(u64Key(nil, tTargets, id), t); err != nil {
			im.b.Close()
			return err
		}
	}
	next = max(next, s.nextSeq)
	err = errors.Join(
		im.b.Set(metaNextSeq, be64bytes(next), nil),
		im.b.Delete(metaImporting, nil),
		im.b.Set(metaImported, nil, nil),
	)
	if err == nil {
		err = im.b.Commit(pebble.Sync)
	}
	im.b.Close()
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	s.nextSeq = next
	if err := s.counts.load(s.db); err != nil {
		return err
	}
	s.log.Info("queues moved", "items", im.items)
	return s.Store.DropQueues(ctx)
}

func isEmpty(db *pebble.DB) (bool, error) {
	it, err := db.NewIter(nil)
	if err != nil {
		return false, err
	}
	empty := !it.First()
	return empty, it.Close()
}

// importer writes SQLite's rows as this package's keys.
type importer struct {
	db      *pebble.DB
	b       *pebble.Batch
	targets map[uint64][]byte // shared id → the devices it was queued for
	items   int
}

// set adds a key, writing the batch (unsynced: only the last is synced)
// when it is full.
func (im *importer) set(k, v []byte) error {
	if err := im.b.Set(k, v, nil); err != nil {
		return err
	}
	if im.b.Len() < importBatchSize {
		return nil
	}
	if err := im.b.Commit(pebble.NoSync); err != nil {
		return err
	}
	im.b.Close()
	im.b = im.db.NewBatch()
	return nil
}

func (im *importer) Shared(e sqlite.ExportedShared) error {
	h := shared{refs: e.Refs, expires: e.Expires, sent: e.Sent, kind: store.KindGroupMessage, group: e.Group, cid: e.ClientID, from: e.From}
	if e.Change {
		h.kind = store.KindGroupChange
	}
	return errors.Join(
		im.set(u64Key(nil, tShared, e.ID), appendShared(nil, &h)),
		im.set(u64Key(nil, tPayload, e.ID), e.Payload),
		im.set(expiryKey(nil, tSharedExp, e.Expires, e.ID), nil),
	)
}

func (im *importer) Item(e sqlite.ExportedItem) error {
	im.items++
	it := item{kind: e.Kind, shared: e.Shared, sent: e.Sent, expires: e.Expires, cid: e.ClientID, from: e.From, payload: e.Payload}
	if err := im.set(queueKey(nil, e.To, e.Seq), appendItem(nil, &it)); err != nil {
		return err
	}
	if e.Shared != 0 {
		im.targets[e.Shared] = appendTarget(im.targets[e.Shared], e.To, e.Seq)
		return nil
	}
	return im.set(expiryKey(nil, tItemExpiry, e.Expires, e.Seq), appendDev(nil, e.To))
}

func (im *importer) Dedup(from store.DeviceAddr, cid [store.ClientIDSize]byte, sent, expires int64) error {
	return errors.Join(
		im.set(dedupKey(nil, from, cid), binaryAppend2(nil, uint64(sent), uint64(expires))),
		im.set(dedupExpiryKey(nil, expires, from, cid), nil),
	)
}

func (im *importer) Group(id [store.GroupIDSize]byte, seq uint64, state []byte) error {
	v := be64bytes(seq)
	return im.set(groupKey(nil, id), append(v, state...))
}

func (im *importer) GroupLog(id [store.GroupIDSize]byte, seq uint64, change []byte) error {
	return im.set(groupLogKey(nil, id, seq), change)
}
