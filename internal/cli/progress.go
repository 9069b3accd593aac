package cli

import (
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// bars draws one progress bar per transfer on a terminal (schollz/
// progressbar: bytes, rate and a working ETA), and nothing elsewhere:
// scripts read --json, not bars.
type bars struct {
	w  io.Writer
	on bool

	mu  sync.Mutex
	all map[uint64]*progressbar.ProgressBar
}

func newBars(w io.Writer) *bars {
	on := false
	if f, ok := w.(*os.File); ok {
		on = term.IsTerminal(int(f.Fd()))
	}
	return &bars{w: w, on: on, all: map[uint64]*progressbar.ProgressBar{}}
}

// set shows that transfer seq (label: upload or download of name) is at
// done of total bytes.
func (b *bars) set(seq uint64, label string, done, total int64) {
	if !b.on || total <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	bar := b.all[seq]
	if bar == nil {
		bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(b.w),
			progressbar.OptionSetDescription(label),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetWidth(24),
			progressbar.OptionOnCompletion(func() { io.WriteString(b.w, "\n") }),
		)
		b.all[seq] = bar
	}
	bar.Set64(done)
}

// done ends transfer seq's bar.
func (b *bars) done(seq uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if bar := b.all[seq]; bar != nil {
		if !bar.IsFinished() {
			bar.Exit()
			io.WriteString(b.w, "\n")
		}
		delete(b.all, seq)
	}
}
