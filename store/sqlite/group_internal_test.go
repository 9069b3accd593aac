package sqlite

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestExpireGroupItemsPlan: Expire finds expired group items through
// their shared rows' expiry index and the seq range each names, never by
// reading all of queue (which has no index on shared_id): without the
// CROSS JOIN and the unary + in expiredGroupItems, SQLite's planner
// scanned queue, or built an automatic index over all of it.
func TestExpireGroupItemsPlan(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "magpie.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, q := range []string{
		`DELETE FROM queue WHERE ` + expiredGroupItems,
		`SELECT to_user, to_device, count(*) FROM queue WHERE ` + expiredGroupItems + ` GROUP BY to_user, to_device`,
	} {
		rows, err := s.w.Query("EXPLAIN QUERY PLAN "+q, 0)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
		all := strings.Join(plan, "; ")
		if !strings.Contains(all, "SEARCH s USING INDEX shared_by_expiry") || !strings.Contains(all, "SEARCH q USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)") ||
			strings.Contains(all, "SCAN q") || strings.Contains(all, "AUTOMATIC") {
			t.Errorf("%s:\nplan %s; want shared by its expiry index, then each one's range of queue", q, all)
		}
	}
}
