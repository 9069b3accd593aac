package bench

import (
	"fmt"
	"time"
)

// openLoop is what the open-loop scenarios (chat, crash) share: checked,
// and defaulted in place, by check.
type openLoop struct {
	clients                  int
	rate                     float64
	duration                 time.Duration
	size, inflight, setupCon *int
}

func (l openLoop) check(scenario string) error {
	if l.clients < 2 {
		return fmt.Errorf("bench %s: need at least 2 clients", scenario)
	}
	if l.rate <= 0 {
		return fmt.Errorf("bench %s: the rate must be positive", scenario)
	}
	if l.duration <= 0 {
		return fmt.Errorf("bench %s: the duration must be positive", scenario)
	}
	if err := checkSize(scenario, l.size); err != nil {
		return err
	}
	defaultInt(l.inflight, 64)
	defaultInt(l.setupCon, 32)
	return nil
}

// checkSize defaults a payload size to 1 KiB and refuses one too small to
// carry the bench's own header.
func checkSize(scenario string, size *int) error {
	if *size == 0 {
		*size = 1024
	}
	if *size < MinSize {
		return fmt.Errorf("bench %s: the size must be at least %d bytes", scenario, MinSize)
	}
	return nil
}

// defaultInt sets *v to def if it is not positive.
func defaultInt(v *int, def int) {
	if *v <= 0 {
		*v = def
	}
}
