//go:build unix

package embed

import (
	"os"
	"syscall"
)

// lockFile takes an exclusive flock on f, waiting for another process's:
// a cache's writer holds it while it appends, and an opener while it reads
// the records (and cuts a crashed writer's tail), so that an opener never
// takes a live append for a crashed one.
func lockFile(f *os.File) (unlock func(), err error) {
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }, nil
}
