package engine

import (
	"fmt"
	"math"
)

// Schedule is a learning-rate schedule, with Hugging Face transformers'
// convention (torch's LambdaLR): optimizer step s, counted from 0, uses
// LR * factor(s). During warmup factor(s) = s / Warmup, so the first step of
// a warmed-up run uses a learning rate of 0, exactly as transformers'
// get_*_schedule_with_warmup do. After warmup, with the progress
// p = (s - Warmup) / (Total - Warmup), clamped to [0, 1], and r = MinLR / LR:
//
//	constant: 1
//	linear:   r + (1 - r) (1 - p)
//	cosine:   r + (1 - r) (1 + cos(pi p)) / 2
type Schedule struct {
	Name   string  // "constant", "linear" or "cosine"
	LR     float64 // the peak learning rate
	MinLR  float64 // where linear and cosine end; 0 by default
	Warmup int     // warmup steps
	Total  int     // the run's optimizer steps
}

// Schedules lists the schedule names.
var Schedules = []string{"constant", "linear", "cosine"}

// Validate checks the schedule's settings.
func (s Schedule) Validate() error {
	switch s.Name {
	case "constant", "linear", "cosine":
	default:
		return fmt.Errorf("unknown learning-rate schedule %q (want constant, linear or cosine)", s.Name)
	}
	if !(s.LR > 0) || math.IsInf(s.LR, 0) {
		return fmt.Errorf("learning rate %g: must be positive", s.LR)
	}
	if !(s.MinLR >= 0 && s.MinLR <= s.LR) { // NaN fails too
		return fmt.Errorf("minimum learning rate %g: must be in [0, lr %g]", s.MinLR, s.LR)
	}
	if s.Warmup < 0 {
		return fmt.Errorf("warmup %d steps: must not be negative", s.Warmup)
	}
	return nil
}

// At returns the learning rate of optimizer step s (from 0).
func (s Schedule) At(step int) float64 {
	if step < s.Warmup {
		return s.LR * float64(step) / float64(max(1, s.Warmup))
	}
	if s.Name == "constant" {
		return s.LR
	}
	p := float64(step-s.Warmup) / float64(max(1, s.Total-s.Warmup))
	p = min(max(p, 0), 1)
	r := s.MinLR / s.LR
	var f float64
	if s.Name == "linear" {
		f = r + (1-r)*(1-p)
	} else {
		f = r + (1-r)*0.5*(1+math.Cos(math.Pi*p))
	}
	return s.LR * f
}
