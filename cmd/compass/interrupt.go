package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// repeatWindow is how long after the first SIGINT or SIGTERM a repeat is
// taken for the same request. timeout(1) sends its SIGTERM to the command
// and then to the command's process group, and a shell's kill of a job
// does the same: one request, delivered twice within microseconds. A
// person pressing Ctrl-C again takes longer than this.
const repeatWindow = 500 * time.Millisecond

// interruptible returns a context that the first SIGINT or SIGTERM
// cancels, calling first with it once when it does; a signal after repeatWindow
// more calls quit with it (a person asking to stop now). stop releases the
// signals and cancels the context; it is called once.
func interruptible(ctx context.Context, first func(os.Signal), quit func(os.Signal)) (_ context.Context, stop func()) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go watchSignals(sigs, done, func(s os.Signal) { first(s); cancel() }, quit) // what first does is seen once ctx is done
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel()
	}
}

// watchSignals reads sigs until done is closed: the first signal calls
// first, a repeat within repeatWindow of it nothing, a later one quit (and
// ends the watch).
func watchSignals(sigs <-chan os.Signal, done <-chan struct{}, first func(os.Signal), quit func(os.Signal)) {
	var at time.Time
	for {
		select {
		case <-done:
			return
		case s := <-sigs:
			switch {
			case at.IsZero():
				at = time.Now()
				first(s)
			case time.Since(at) >= repeatWindow:
				quit(s)
				return
			}
		}
	}
}

// stopOnSignal wires SIGINT and SIGTERM for a command that stops its work
// when ctx is done: the first signal prints message and cancels ctx, a
// later one quits at once. finish releases the signals and returns err,
// as the signal's exit status (130, 143) when a signal stopped the work.
func stopOnSignal(ctx context.Context, errw io.Writer, message string) (_ context.Context, finish func(error) error) {
	var sig os.Signal
	ctx, stop := interruptible(ctx, func(s os.Signal) {
		sig = s
		fmt.Fprintf(errw, "\n%s (interrupt again to quit now)\n", message)
	}, exitOnSignal)
	return ctx, func(err error) error {
		stop()
		// A cancelled context means that first ran, and sig is set.
		if err != nil && errors.Is(err, context.Canceled) && sig != nil {
			return &exitStatus{signalStatus(sig), err}
		}
		return err
	}
}

// stepsStopping is stopOnSignal's message for the commands made of steps
// (adapt, update, continual, demo): the work stops at the next point it
// checks, and the next run reuses the finished steps.
func stepsStopping(name string) string {
	return name + ": interrupted: stopping at the next chunk of records, batch of items or training step; finished steps are kept for the next run"
}

// exitOnSignal ends the process at once with the status a shell gives a
// process that sig (SIGINT or SIGTERM) killed: 130 or 143.
func exitOnSignal(sig os.Signal) {
	os.Exit(signalStatus(sig))
}

// signalStatus is the exit status of a process that sig ended: 128 + its
// number.
func signalStatus(sig os.Signal) int {
	return 128 + int(sig.(syscall.Signal))
}

// exitStatus is an error that ends the command with its status rather
// than 1 (main): an interrupted run that saved its work exits as a shell
// expects of one that a signal stopped, so that `compass train ... &&
// compass eval ...` does not go on with an unfinished adapter.
type exitStatus struct {
	status int
	err    error
}

func (e *exitStatus) Error() string { return e.err.Error() }
func (e *exitStatus) Unwrap() error { return e.err }
