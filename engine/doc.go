// Package engine runs compass's jobs on a model: scoring text now; the
// training loop, evaluation and the COMPASS pipeline as they land.
package engine
