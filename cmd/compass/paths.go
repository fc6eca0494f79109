package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// checkOutput checks an output flag before any work. Its folder must be
// one a file can be made in (checkWritableDir: the folders it lacks are
// made when the output is written), so that hours of embedding are not
// lost to a typo at the end. And it must not name one of the command's
// inputs, file or directory (the same file by os.SameFile, so another
// spelling or a link counts): the outputs are written atomically, and the
// rename at the end would replace the input with what was made from it.
// flags are pairs of a flag's name and its value, the output first; ""
// and "-" (standard input or output) name no file.
func checkOutput(flags ...string) error {
	out, outPath := flags[0], flags[1]
	if outPath == "" || outPath == "-" {
		return nil
	}
	if err := checkWritableDir(filepath.Dir(outPath)); err != nil {
		return fmt.Errorf("--%s %s: %w", out, outPath, err)
	}
	oi, err := os.Stat(outPath)
	if err != nil {
		return nil // not there yet: nothing to write over
	}
	for i := 2; i+1 < len(flags); i += 2 {
		in, inPath := flags[i], flags[i+1]
		if inPath == "" || inPath == "-" {
			continue
		}
		if ii, err := os.Stat(inPath); err == nil && os.SameFile(oi, ii) {
			return fmt.Errorf("--%s %s is also --%s: refusing to write over an input", out, outPath, in)
		}
	}
	return nil
}

// checkWritableDir checks that dir, or the nearest of its parents that
// exists when dir does not (the results make the rest), is a directory a
// file can be created in. It leaves nothing behind.
func checkWritableDir(dir string) error {
	for {
		st, err := os.Stat(dir)
		// ENOTDIR: a file where a folder is named; the climb finds it.
		if (errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)) && filepath.Dir(dir) != dir {
			dir = filepath.Dir(dir)
			continue
		}
		if err != nil {
			return err
		}
		if !st.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		break
	}
	f, err := os.CreateTemp(dir, ".compass-write-check-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}
