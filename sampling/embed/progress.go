package embed

import (
	"fmt"
	"io"
	"time"
)

// Progress draws one status line of an embedding run on a terminal:
//
//	embed  42%  1,234 records  1,000 embedded (83,210 tokens, 412 tok/s)  234 cached  eta 3m12s
//
// A nil *Progress draws nothing, so code can report progress
// unconditionally.
type Progress struct {
	w        io.Writer
	fraction func() float64 // how much of the input has been read; nil when unknown
	start    time.Time
	last     time.Time
	records  int
	embedded int
	tokens   int
	cached   int
}

// redrawEvery limits how often the line is redrawn.
const redrawEvery = 200 * time.Millisecond

// NewProgress returns a progress line on w (a terminal: the line is
// redrawn in place with a carriage return), or nil when w is nil. fraction
// reports how much of the input has been read, from 0 to 1, for the
// percentage and the estimate of the time left; nil when unknown.
func NewProgress(w io.Writer, fraction func() float64) *Progress {
	if w == nil {
		return nil
	}
	now := time.Now()
	return &Progress{w: w, fraction: fraction, start: now}
}

// addEmbedded counts texts a model embedded and their tokens.
func (p *Progress) addEmbedded(texts, tokens int) {
	if p == nil {
		return
	}
	p.embedded += texts
	p.tokens += tokens
	p.draw(false)
}

// addCached counts texts found in a cache.
func (p *Progress) addCached(texts int) {
	if p == nil {
		return
	}
	p.cached += texts
	p.draw(false)
}

// setRecords sets how many input records are done.
func (p *Progress) setRecords(n int) {
	if p == nil {
		return
	}
	p.records = n
	p.draw(false)
}

// Finish draws the final line and ends it.
func (p *Progress) Finish() {
	if p == nil {
		return
	}
	p.draw(true)
	fmt.Fprintln(p.w)
}

func (p *Progress) draw(force bool) {
	now := time.Now()
	if !force && now.Sub(p.last) < redrawEvery {
		return
	}
	p.last = now
	elapsed := now.Sub(p.start)
	line := "embed"
	f := -1.0
	if p.fraction != nil {
		f = p.fraction()
		line += fmt.Sprintf("  %3.0f%%", 100*f)
	}
	line += fmt.Sprintf("  %s records  %s embedded (%s tokens", groupDigits(p.records), groupDigits(p.embedded), groupDigits(p.tokens))
	if s := elapsed.Seconds(); s > 0 {
		line += fmt.Sprintf(", %.0f tok/s", float64(p.tokens)/s)
	}
	line += fmt.Sprintf(")  %s cached", groupDigits(p.cached))
	switch {
	case force:
		line += "  " + elapsed.Round(time.Second).String()
	case f > 0 && f < 1:
		left := time.Duration(float64(elapsed) * (1 - f) / f)
		line += "  eta " + left.Round(time.Second).String()
	}
	// \r returns to the start of the line, \x1b[K clears what a longer
	// previous line left.
	fmt.Fprintf(p.w, "\r%s\x1b[K", line)
}

// groupDigits writes n with thousands separators: 83210 -> 83,210.
func groupDigits(n int) string {
	s := fmt.Sprint(n)
	neg := ""
	if n < 0 {
		neg, s = "-", s[1:]
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return neg + s
}
