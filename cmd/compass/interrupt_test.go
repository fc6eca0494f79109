package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestInterruptibleCancelsOnSIGTERM sends this process SIGTERM: the
// context is cancelled, first is called, and the process goes on.
func TestInterruptibleCancelsOnSIGTERM(t *testing.T) {
	firsts := make(chan struct{}, 4)
	ctx, stop := interruptible(context.Background(), func(os.Signal) { firsts <- struct{}{} }, func(s os.Signal) { t.Errorf("quit on %v after one signal", s) })
	defer stop()
	if err := ctx.Err(); err != nil {
		t.Fatalf("cancelled before any signal: %v", err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("SIGTERM did not cancel the context")
	}
	<-firsts
}

// TestWatchSignalsTakesARepeatForTheSameRequest gives the watch SIGTERM
// twice back to back, as timeout(1) sends it (to the command, then to its
// process group): one request, which calls first and does not quit. A
// signal after repeatWindow is a second request, and quits. (Taking the
// repeat for a second request lost a timed-out bench run's results about
// one time in five.)
func TestWatchSignalsTakesARepeatForTheSameRequest(t *testing.T) {
	sigs := make(chan os.Signal, 4)
	done := make(chan struct{})
	firsts := make(chan struct{}, 4)
	quits := make(chan os.Signal, 4)
	ended := make(chan struct{})
	go func() {
		watchSignals(sigs, done, func(os.Signal) { firsts <- struct{}{} }, func(s os.Signal) { quits <- s })
		close(ended)
	}()
	sigs <- syscall.SIGTERM
	sigs <- syscall.SIGTERM
	<-firsts
	time.Sleep(repeatWindow / 2) // the repeat, if taken for a second request, has quit by now
	select {
	case s := <-quits:
		t.Fatalf("quit on %v: a repeat within %v was taken for a second request", s, repeatWindow)
	default:
	}
	time.Sleep(repeatWindow)
	sigs <- os.Interrupt
	select {
	case s := <-quits:
		if s != os.Interrupt {
			t.Errorf("quit on %v, want the second request's SIGINT", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a signal after the repeat window did not quit")
	}
	<-ended // quitting ends the watch
	if len(firsts) != 0 {
		t.Errorf("first called %d more times", len(firsts))
	}

	// Closing done ends a watch that saw no signal.
	done2 := make(chan struct{})
	ended2 := make(chan struct{})
	go func() {
		watchSignals(make(chan os.Signal), done2, func(os.Signal) { t.Error("first without a signal") }, func(os.Signal) { t.Error("quit without a signal") })
		close(ended2)
	}()
	close(done2)
	<-ended2
	close(done)
}

// TestMain lets a test run the command itself in a child process (the
// test binary with COMPASS_TEST_RUN_MAIN=1 and the command's arguments),
// to send it signals.
func TestMain(m *testing.M) {
	if os.Getenv("COMPASS_TEST_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startBench starts `compass bench` on the quick sizes in a child process,
// its scratch in tmp, its results in out, each measurement repeated for
// minTime, and returns once the
// safetensors suite has started (its progress line on stderr), so that
// matmul, the next suite, has not.
func startBench(t *testing.T, tmp, out, minTime string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "bench", "--quick", "--only", "safetensors,matmul", "--threads", "1", "--min-time", minTime, "--python", "/nonexistent/python3", "--out", out)
	cmd.Env = append(os.Environ(), "COMPASS_TEST_RUN_MAIN=1", "TMPDIR="+tmp)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var rest bytes.Buffer
	lines := bufio.NewScanner(stderr)
	for lines.Scan() {
		if strings.HasPrefix(lines.Text(), "safetensors:") {
			go io.Copy(&rest, stderr) // the child must not block on a full pipe
			return cmd, &rest
		}
	}
	cmd.Wait()
	t.Fatal("compass bench ended without starting the safetensors suite")
	return nil, nil
}

// TestBenchCommandInterrupted sends `compass bench` SIGTERM twice back to
// back, as timeout(1) does: the suite running finishes, the next is not
// run, the results are written with their first line naming it, and the
// scratch directory is removed. A second request half a second later
// quits at once (exit status 143), writing nothing and leaving no scratch.
func TestBenchCommandInterrupted(t *testing.T) {
	tmp, out := t.TempDir(), filepath.Join(t.TempDir(), "results")
	cmd, _ := startBench(t, tmp, out, "1ms")
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("interrupted once: %v, want exit status 1 (not every suite ran)", err)
	}
	files, _ := filepath.Glob(filepath.Join(out, "*-cpu.jsonl"))
	if len(files) != 1 {
		t.Fatalf("interrupted once: results %v, want one file", files)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(data), "\n")
	if !strings.Contains(first, "interrupted: matmul not run") || !strings.Contains(string(data), `"suite":"safetensors"`) {
		t.Errorf("interrupted once: results file\n%s\nwant safetensors' results, its first line saying matmul was not run", data)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("interrupted once: %d scratch entries left in TMPDIR (%s...)", len(left), left[0].Name())
	}

	tmp, out = t.TempDir(), filepath.Join(t.TempDir(), "results")
	cmd, _ = startBench(t, tmp, out, "5s") // still running at the second request
	cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(repeatWindow + 100*time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	err = cmd.Wait()
	if !errors.As(err, &exit) || exit.ExitCode() != 143 {
		t.Errorf("interrupted twice: %v, want exit status 143", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("interrupted twice: %s exists (%v), want nothing written", out, err)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("interrupted twice: %d scratch entries left in TMPDIR (%s...)", len(left), left[0].Name())
	}
}
