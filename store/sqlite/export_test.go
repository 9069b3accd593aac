package sqlite

import "fmt"

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

// CheckCounters reports devices whose queued counter differs from the number
// of items in their queue.
func CheckCounters(s *Store) error {
	rows, err := s.r.Query(`
		SELECT d.user, d.id, d.queued,
			(SELECT count(*) FROM queue q WHERE q.to_user = d.user AND q.to_device = d.id)
		FROM devices d`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			user       string
			id, q, cnt int64
		)
		if err := rows.Scan(&user, &id, &q, &cnt); err != nil {
			return err
		}
		if q != cnt {
			return fmt.Errorf("device %s/%d: queued = %d, but %d items", user, id, q, cnt)
		}
	}
	return rows.Err()
}

var Migrations = migrations
