// Package atomicfile replaces files so that a reader, or a crash, sees the
// old file or the whole new one, never a partial file: the contents go to
// a temporary file in the same directory, which is synced and renamed over
// the destination.
package atomicfile

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
)

// Write replaces path with what write produces. The file gets mode 0644 (as
// os.Create gives under the usual umask). On any error the temporary file
// is removed and path is left as it was.
func Write(path string, write func(w io.Writer) error) error {
	p, err := Prepare(path, write)
	if err != nil {
		return err
	}
	if err := p.Commit(); err != nil {
		p.Discard()
		return err
	}
	return nil
}

// WriteBytes replaces path with data.
func WriteBytes(path string, data []byte) error {
	return Write(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteNew creates path with what write produces, complete or not at all,
// and never replaces a file that is there: then the error satisfies
// errors.Is(err, fs.ErrExist) and path is left as it was. Of two processes
// creating the same file, exactly one succeeds.
func WriteNew(path string, write func(w io.Writer) error) error {
	p, err := Prepare(path, write)
	if err != nil {
		return err
	}
	defer p.Discard()
	// A hard link, unlike a rename, fails when the destination exists.
	if err := os.Link(p.tmp, p.path); err != nil {
		return err
	}
	syncDir(filepath.Dir(p.path))
	return nil
}

// Pending is a file written and synced under a temporary name beside its
// destination, not yet in place. Files that belong together are each
// prepared before any is committed, so that a failure while writing one
// leaves all of them as they were.
type Pending struct {
	tmp, path string
}

// Prepare writes what write produces to a temporary file beside path and
// syncs it; Commit puts it in place. On an error nothing is left behind but
// path's directory, which is made when it is missing: an output named in a
// folder not made yet is written there, not lost with the work behind it.
func Prepare(path string, write func(w io.Writer) error) (p *Pending, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	w := bufio.NewWriterSize(tmp, 1<<20)
	if err := write(w); err != nil {
		return nil, err
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	if err := tmp.Chmod(0o644); err != nil { // CreateTemp makes the file private
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	return &Pending{tmp: tmp.Name(), path: path}, nil
}

// Commit renames the file over its destination and syncs the directory.
func (p *Pending) Commit() error {
	if err := os.Rename(p.tmp, p.path); err != nil {
		return err
	}
	syncDir(filepath.Dir(p.path))
	return nil
}

// Discard removes the temporary file; after Commit it does nothing.
func (p *Pending) Discard() { os.Remove(p.tmp) }

// syncDir makes a rename or link in dir durable. Some file systems cannot
// sync a directory, and the new file is complete either way, so an error
// is not reported.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
