package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/magpie-im/magpie/internal/bytesize"
)

// progressBar draws "label [=====>    ]  45%  12.3 MiB / 27.0 MiB  2.1 MiB/s  ETA 7s"
// on one line of a terminal, at most ten times a second. On anything but a
// terminal it draws nothing: scripts read --json, not bars.
type progressBar struct {
	w     io.Writer
	label string
	on    bool
	start time.Time

	mu   sync.Mutex
	last time.Time
}

func newProgressBar(w io.Writer, label string) *progressBar {
	on := false
	if f, ok := w.(*os.File); ok {
		on = term.IsTerminal(int(f.Fd()))
	}
	return &progressBar{w: w, label: label, on: on, start: time.Now()}
}

// update implements client.Progress.
func (p *progressBar) update(done, total int64) {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if now.Sub(p.last) < 100*time.Millisecond && done < total {
		return
	}
	p.last = now
	frac := 0.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	const width = 24
	filled := int(frac * width)
	bar := strings.Repeat("=", filled)
	if filled < width {
		bar += ">" + strings.Repeat(" ", width-filled-1)
	}
	elapsed := now.Sub(p.start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(done) / elapsed
	}
	eta := "-"
	if rate > 0 && done < total {
		eta = (time.Duration(float64(total-done)/rate) * time.Second / time.Second).Round(time.Second).String()
	}
	fmt.Fprintf(p.w, "\r%s [%s] %3.0f%%  %s / %s  %s/s  ETA %s ", p.label, bar, frac*100, bytesize.Format(done), bytesize.Format(total), bytesize.Format(int64(rate)), eta)
}

// done ends the bar's line.
func (p *progressBar) done() {
	if p.on {
		fmt.Fprintln(p.w)
	}
}
