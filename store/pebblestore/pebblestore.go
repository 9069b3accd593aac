// Package pebblestore implements store.Store with the delivery queues,
// deduplication records and groups in Pebble (github.com/cockroachdb/pebble/v2,
// the LSM engine of CockroachDB) and accounts, devices and keys in SQLite
// (store/sqlite).
//
// Queue items are written once and deleted once, which is what an LSM
// does cheaply: a batch of a thousand enqueues and acknowledgements is one
// write to the write-ahead log and one fsync, and an item acknowledged
// before its memtable is flushed never reaches a table file. SQLite paid a
// B-tree update and a page in its log per row (docs/ARCHITECTURE.md has
// the measurements that chose this).
//
// Every Commit is one Pebble batch, synced. Accounts and keys change
// rarely and are read through a small cache (recipients.go), so a commit
// never writes SQLite; nothing is ever committed to both engines at once.
package pebblestore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"

	"github.com/magpie-im/magpie/internal/closegate"
	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/internal/batchrules"
	"github.com/magpie-im/magpie/store/sqlite"
)

// Options configure Open. The zero value is usable.
type Options struct {
	// Logger receives operational messages (never payloads or keys).
	Logger *slog.Logger
	// Reserve is the size of the file kept beside the queues so that
	// acknowledgements commit on a full disk (space.go); 0 means 16 MiB,
	// negative none.
	Reserve int64
}

// Store is a store.Store: accounts and keys in an SQLite database, queues
// and groups in a Pebble database beside it.
type Store struct {
	*sqlite.Store // accounts, devices, keys; its queue tables stay empty

	log  *slog.Logger
	db   *pebble.DB
	recp recipientCache
	keys deviceCache

	// wmu serializes Commit and Expire: each reads what the last one
	// wrote, and assigns the next seqs.
	wmu     sync.Mutex
	nextSeq uint64
	counts  queueCounts
	senders batchrules.SenderCounts
	space   space

	// gate lets Close wait for the calls in flight and refuse later ones.
	gate closegate.Gate
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the store in dir: magpie.db for accounts
// and keys, queues/ for the Pebble database.
func Open(dir string, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pebblestore: open: %w", err)
	}
	accounts, err := sqlite.Open(filepath.Join(dir, "magpie.db"), sqlite.Options{Logger: log, Reserve: -1})
	if err != nil {
		return nil, err
	}
	s := &Store{Store: accounts, log: log}
	s.space = newSpace(filepath.Join(dir, "queues.reserve"), opts.Reserve)
	s.space.beforeOpen() // a server must start on a full disk
	db, err := openPebble(filepath.Join(dir, "queues"), log)
	if err != nil {
		accounts.Close()
		return nil, err
	}
	s.db = db
	if err := s.load(); err != nil {
		db.Close()
		accounts.Close()
		return nil, fmt.Errorf("pebblestore: open: %w", err)
	}
	if err := s.importSQLite(context.Background()); err != nil {
		db.Close()
		accounts.Close()
		return nil, fmt.Errorf("pebblestore: open: moving the queues from magpie.db: %w", err)
	}
	s.space.open()
	return s, nil
}

// openPebble opens the queue database at path, starting it afresh if it
// holds an import that was cut short (migrate.go).
func openPebble(path string, log *slog.Logger) (*pebble.DB, error) {
	for range 2 {
		popts := pebbleOptions(log)
		popts.Cache = pebble.NewCache(cacheSize)
		db, err := pebble.Open(path, popts)
		popts.Cache.Unref() // the database holds its own reference
		if err != nil {
			return nil, fmt.Errorf("pebblestore: open %s: %w", path, err)
		}
		cut, err := interruptedImport(db)
		if err != nil || !cut {
			if err != nil {
				db.Close()
				return nil, fmt.Errorf("pebblestore: open %s: %w", path, err)
			}
			return db, nil
		}
		log.Warn("the move of the queues from magpie.db was cut short; starting it again", "path", path)
		if err := errors.Join(db.Close(), os.RemoveAll(path)); err != nil {
			return nil, fmt.Errorf("pebblestore: open %s: %w", path, err)
		}
	}
	return nil, fmt.Errorf("pebblestore: open %s: could not start the queue database afresh", path)
}

// cacheSize is Pebble's block cache: the recent tables, where pending items
// and deduplication records are read.
const cacheSize = 64 << 20

func pebbleOptions(log *slog.Logger) *pebble.Options {
	o := &pebble.Options{
		// Items live from enqueue to acknowledgement, usually well under a
		// memtable's lifetime at chat rates: a large memtable lets most
		// of them be written and deleted without reaching a table file.
		MemTableSize: 8 << 20,
		Logger:       pebbleLogger{log},
		// The format the engine's current release writes; pinned, so that
		// an upgrade of the module does not silently change the files.
		FormatMajorVersion: pebble.FormatNewest,
	}
	// Every new message looks up its deduplication record, which is
	// almost never there: bloom filters answer most such lookups without
	// reading a table's blocks (without them, lookups were half of a
	// commit's CPU in BenchmarkChatCommit).
	for i := range o.Levels {
		o.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	o.EnsureDefaults()
	return o
}

// pebbleLogger sends Pebble's messages to slog. Fatalf is left to Pebble's
// default behaviour (it panics: the engine cannot go on).
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug("pebble: " + fmt.Sprintf(format, args...))
}
func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error("pebble: " + fmt.Sprintf(format, args...))
}
func (l pebbleLogger) Fatalf(format string, args ...any) {
	pebble.DefaultLogger.Fatalf(format, args...)
}

// load reads the next seq and counts every device's queue.
func (s *Store) load() error {
	v, closer, err := s.db.Get(metaNextSeq)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		s.nextSeq = 1
	case err != nil:
		return err
	default:
		if len(v) != 8 {
			closer.Close()
			return errCorrupt
		}
		s.nextSeq = be64(v)
		closer.Close()
	}
	return s.counts.load(s.db)
}

// Close waits for operations in flight and closes both databases.
func (s *Store) Close() error {
	if !s.gate.Close() {
		return store.ErrClosed
	}
	err := errors.Join(s.db.Close(), s.Store.Close())
	if err != nil {
		return fmt.Errorf("pebblestore: close: %w", err)
	}
	return nil
}

// enter marks a call in flight; the caller must call s.gate.Leave.
func (s *Store) enter() error {
	if !s.gate.Enter() {
		return store.ErrClosed
	}
	return nil
}

// CreateUser implements store.Store.
func (s *Store) CreateUser(ctx context.Context, name string, key [store.KeySize]byte, now time.Time) (store.Device, error) {
	defer s.recp.forget(name)
	defer s.keys.forget(key)
	return s.Store.CreateUser(ctx, name, key, now)
}

// AddDevice registers another device for user (sqlite.Store.AddDevice).
func (s *Store) AddDevice(ctx context.Context, user string, key [store.KeySize]byte, now time.Time) (store.Device, error) {
	defer s.recp.forget(user)
	defer s.keys.forget(key)
	return s.Store.AddDevice(ctx, user, key, now)
}

// DeviceByKey implements store.Store, from a cache (recipients.go).
func (s *Store) DeviceByKey(ctx context.Context, key [store.KeySize]byte) (store.Device, error) {
	if err := s.enter(); err != nil {
		return store.Device{}, err
	}
	defer s.gate.Leave()
	return s.keys.get(ctx, s.Store, key)
}

// SetKeys implements store.Store.
func (s *Store) SetKeys(ctx context.Context, dev store.DeviceAddr, k store.Keys, limit int) (store.KeyCounts, error) {
	defer s.recp.forget(dev.User)
	return s.Store.SetKeys(ctx, dev, k, limit)
}

// QueueDepth implements store.Store.
func (s *Store) QueueDepth(ctx context.Context) (int64, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.gate.Leave()
	return s.counts.Sum(), nil
}
