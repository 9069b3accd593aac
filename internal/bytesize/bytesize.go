// Package bytesize formats byte counts for people, in binary units
// (KiB, MiB, GiB), as the CLI's progress bars and the SDK's attachment
// summaries show them.
package bytesize

import "fmt"

// Format renders n bytes with one decimal in the largest binary unit that
// keeps the number at least 1, or as plain bytes below 1 KiB.
func Format(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}
