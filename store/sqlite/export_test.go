package sqlite

import (
	"context"
	"encoding/json"
	"fmt"
)

// Pragma reads PRAGMA name on the write connection or on a read connection.
func Pragma(s *Store, name string, write bool) (string, error) {
	db := s.r
	if write {
		db = s.w
	}
	var v string
	err := db.QueryRow("PRAGMA " + name).Scan(&v)
	return v, err
}

// CheckCounters reports devices whose in-memory queue count differs from
// the number of items in their queue, and a total that differs from their
// sum.
func CheckCounters(s *Store) error {
	want, total, err := queueLengths(context.Background(), s.r, "1")
	if err != nil {
		return err
	}
	counted, countedTotal := s.counts.Snapshot()
	for d, n := range want {
		if got := counted[d]; got != n {
			return fmt.Errorf("device %s/%d: counted %d, but %d items", d.User, d.Device, got, n)
		}
	}
	for d, got := range counted {
		if _, ok := want[d]; !ok {
			return fmt.Errorf("device %s/%d: counted %d, but no items", d.User, d.Device, got)
		}
	}
	if countedTotal != total {
		return fmt.Errorf("total counted %d, but %d items", countedTotal, total)
	}
	return nil
}

// Columns returns the names of table's columns.
func Columns(s *Store, table string) ([]string, error) {
	rows, err := s.r.Query(`SELECT name FROM pragma_table_info(?)`, table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		cols = append(cols, c)
	}
	return cols, rows.Err()
}

var Migrations = migrations

// DatabaseSize moves the write-ahead log into the database file and
// returns the file's size in pages: page_count × page_size.
func DatabaseSize(s *Store) (int64, error) {
	var busy, log, done int
	if err := s.w.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &log, &done); err != nil {
		return 0, err
	}
	if busy != 0 {
		return 0, fmt.Errorf("checkpoint blocked")
	}
	var pages, size int64
	if err := s.w.QueryRow("PRAGMA page_count").Scan(&pages); err != nil {
		return 0, err
	}
	if err := s.w.QueryRow("PRAGMA page_size").Scan(&size); err != nil {
		return 0, err
	}
	return pages * size, nil
}

// SharedRefs returns every shared row's id and reference count, and an
// error if the shared rows and the payloads are not for the same ids.
func SharedRefs(s *Store) (map[int64]int64, error) {
	var (
		orphans int
		refs    string
	)
	if err := s.r.QueryRow(`SELECT
		(SELECT count(*) FROM shared WHERE id NOT IN (SELECT id FROM shared_payload)) +
		(SELECT count(*) FROM shared_payload WHERE id NOT IN (SELECT id FROM shared)),
		(SELECT json_group_object(id, refs) FROM shared)`).Scan(&orphans, &refs); err != nil {
		return nil, err
	}
	if orphans != 0 {
		return nil, fmt.Errorf("%d shared rows without a payload or payloads without a row", orphans)
	}
	var m map[int64]int64
	err := json.Unmarshal([]byte(refs), &m)
	return m, err
}
