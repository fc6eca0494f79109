// Package engine runs compass's jobs, each an options struct and a
// function that cmd/compass calls with its flags: Embed, Cluster and Select
// (the COMPASS steps on files), Adapt (the pipeline over them, with
// training and evaluation), Train, Eval, Score, Generate and Monitor.
package engine
