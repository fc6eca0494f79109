//go:build !unix

package engine

import (
	"fmt"
	"runtime"
	"time"
)

// lockFile needs flock, which this system lacks: the registry is read-only
// here.
func lockFile(path string, timeout time.Duration) (unlock func(), err error) {
	return nil, fmt.Errorf("lock %s: the registry's file lock (flock) is not available on %s", path, runtime.GOOS)
}

// lockDir cannot lock without flock: two runs into one directory are not
// caught here.
func lockDir(dir string) (unlock func(), err error) {
	return func() {}, nil
}

// dirLockHolder has no lock to name here.
func dirLockHolder(dir string) string { return "" }
