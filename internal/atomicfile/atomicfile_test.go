package atomicfile

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesOrLeavesAlone(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.txt")
	if err := WriteBytes(path, []byte("old")); err != nil {
		t.Fatal(err)
	}
	failure := errors.New("disk on fire")
	err := Write(path, func(w io.Writer) error {
		w.Write([]byte("partial"))
		return failure
	})
	if !errors.Is(err, failure) {
		t.Fatalf("err = %v", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "old" {
		t.Errorf("after a failed write the file holds %q", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary file left behind: %v", entries)
	}
	if err := WriteBytes(path, []byte("new")); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if got, _ := os.ReadFile(path); string(got) != "new" || st.Mode().Perm() != 0o644 {
		t.Errorf("file holds %q with mode %v", got, st.Mode().Perm())
	}
	// Missing folders are made; a file where a folder should be is an error.
	nested := filepath.Join(dir, "not", "yet", "f.txt")
	if err := WriteBytes(nested, []byte("deep")); err != nil {
		t.Errorf("into folders not made yet: %v", err)
	} else if got, _ := os.ReadFile(nested); string(got) != "deep" {
		t.Errorf("the file in folders not made yet holds %q", got)
	}
	if err := WriteBytes(filepath.Join(path, "under-a-file"), nil); err == nil {
		t.Error("a path under a file: no error")
	}
}

func TestPrepareCommitsTogether(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := WriteBytes(p, []byte("old")); err != nil {
			t.Fatal(err)
		}
	}
	pa, err := Prepare(a, func(w io.Writer) error { _, err := w.Write([]byte("new a")); return err })
	if err != nil {
		t.Fatal(err)
	}
	// The second file fails: the first is discarded and both stay old.
	if _, err := Prepare(b, func(w io.Writer) error { return errors.New("no space") }); err == nil {
		t.Fatal("failed write: no error")
	}
	pa.Discard()
	for _, p := range []string{a, b} {
		if got, _ := os.ReadFile(p); string(got) != "old" {
			t.Errorf("%s holds %q after a discarded write", p, got)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("temporary files left behind: %v", entries)
	}
	pa, err = Prepare(a, func(w io.Writer) error { _, err := w.Write([]byte("new a")); return err })
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(a); string(got) != "old" {
		t.Errorf("before Commit the file holds %q", got)
	}
	if err := pa.Commit(); err != nil {
		t.Fatal(err)
	}
	pa.Discard() // a no-op after Commit
	if got, _ := os.ReadFile(a); string(got) != "new a" {
		t.Errorf("after Commit the file holds %q", got)
	}
}

func TestWriteNewNeverReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	write := func(s string) func(io.Writer) error {
		return func(w io.Writer) error { _, err := w.Write([]byte(s)); return err }
	}
	if err := WriteNew(path, write("first")); err != nil {
		t.Fatal(err)
	}
	if err := WriteNew(path, write("second")); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second WriteNew: err = %v, want fs.ErrExist", err)
	}
	st, _ := os.Stat(path)
	if got, _ := os.ReadFile(path); string(got) != "first" || st.Mode().Perm() != 0o644 {
		t.Errorf("file holds %q with mode %v", got, st.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}
