//go:build unix

package engine

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// lockFile takes an exclusive flock on path, creating the file, waiting up
// to timeout for another process to release it. The kernel releases the
// lock when its holder exits, killed included, so a crash never leaves the
// registry locked. The holder writes its process id into the file for the
// error message of those that wait in vain.
func lockFile(path string, timeout time.Duration) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	fd := int(f.Fd())
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			holder := ""
			if b, err := os.ReadFile(path); err == nil {
				// The file keeps the last holder's pid: name it only while
				// that process lives.
				if pid, err := strconv.Atoi(string(bytes.TrimSpace(b))); err == nil && syscall.Kill(pid, 0) == nil {
					holder = fmt.Sprintf(" (pid %d)", pid)
				}
			}
			f.Close()
			return nil, fmt.Errorf("%w: another compass process%s holds %s; gave up after waiting %v (a longer lock timeout waits longer)",
				ErrRegistryLocked, holder, path, timeout)
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
	// The pid is for messages only: failing to write it is no reason to fail.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() {
		syscall.Flock(fd, syscall.LOCK_UN)
		f.Close()
	}, nil
}

// lockDir takes an exclusive flock on the directory dir itself, failing at
// once when another process holds it: a training run's --output, which two
// runs would each fill with checkpoints the other removes, and the work
// directory of adapt and continual (lockWorkDir). Like lockFile's,
// the lock goes with its holder, however that process ends.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errDirLocked
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// dirLockHolder names the process holding the flock on dir, " (pid N)",
// from Linux's /proc/locks, or returns "" where that is unknown: a
// directory, unlike the registry's lock file, has no room for the holder
// to write its pid into.
func dirLockHolder(dir string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return ""
	}
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return ""
	}
	// Lines read "1: FLOCK  ADVISORY  WRITE 521 fe:00:10012322 0 EOF":
	// the pid, then the device's major and minor (hex) and the inode.
	dev := uint64(st.Dev)
	major := (dev>>8)&0xfff | (dev>>32)&^0xfff
	minor := dev&0xff | (dev>>12)&^0xff
	want := fmt.Sprintf("%02x:%02x:%d", major, minor, st.Ino)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && f[1] == "FLOCK" && f[5] == want {
			if _, err := strconv.Atoi(f[4]); err == nil {
				return " (pid " + f[4] + ")"
			}
		}
	}
	return ""
}
