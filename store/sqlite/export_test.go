package sqlite

import (
	"context"
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
	s.counts.mu.Lock()
	defer s.counts.mu.Unlock()
	for d, n := range want {
		if got := s.counts.n[d]; got != n {
			return fmt.Errorf("device %s/%d: counted %d, but %d items", d.User, d.Device, got, n)
		}
	}
	for d, got := range s.counts.n {
		if _, ok := want[d]; !ok {
			return fmt.Errorf("device %s/%d: counted %d, but no items", d.User, d.Device, got)
		}
	}
	if s.counts.total != total {
		return fmt.Errorf("total counted %d, but %d items", s.counts.total, total)
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
