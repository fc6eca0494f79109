package safetensors

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/compassml/compass/tensor"
)

// The file names of a Hugging Face checkpoint directory.
const (
	IndexFileName  = "model.safetensors.index.json"
	SingleFileName = "model.safetensors"
)

// Checkpoint is a set of safetensors files read as one: a sharded
// checkpoint with its index, or a single file. It is safe for concurrent
// use by several goroutines.
type Checkpoint struct {
	files    []*File          // sorted by path
	owner    map[string]*File // tensor name -> the file that holds it
	names    []string         // sorted
	metadata map[string]any
}

// OpenDir opens the checkpoint in directory dir: the shards named by
// model.safetensors.index.json if it exists, otherwise model.safetensors.
//
// With an index, the checkpoint's tensors are exactly those of its
// weight_map: every shard it names must exist and hold the tensors the
// index places in it; tensors a shard holds beyond those are ignored.
func OpenDir(dir string) (*Checkpoint, error) {
	indexPath := filepath.Join(dir, IndexFileName)
	index, err := os.ReadFile(indexPath)
	if errors.Is(err, fs.ErrNotExist) {
		single := filepath.Join(dir, SingleFileName)
		if _, err := os.Stat(single); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("safetensors: %s: neither %s nor %s exists", dir, IndexFileName, SingleFileName)
		}
		return OpenFiles(single)
	}
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	metadata, weightMap, err := parseIndex(index)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", indexPath, err)
	}

	shardNames := slices.Sorted(maps.Values(weightMap))
	shardNames = slices.Compact(shardNames)
	c := &Checkpoint{
		owner:    make(map[string]*File, len(weightMap)),
		metadata: metadata,
	}
	shards := make(map[string]*File, len(shardNames))
	for _, name := range shardNames {
		path := filepath.Join(dir, name)
		f, err := Open(path)
		if err != nil {
			c.Close()
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("safetensors: %s names shard %s, which does not exist", indexPath, path)
			}
			return nil, err
		}
		c.files = append(c.files, f)
		shards[name] = f
	}
	for name, shard := range weightMap {
		f := shards[shard]
		if _, ok := f.infos[name]; !ok {
			c.Close()
			return nil, fmt.Errorf("safetensors: %s places tensor %q in %s, which does not hold it", indexPath, name, f.Path())
		}
		c.owner[name] = f
	}
	c.names = slices.Sorted(maps.Keys(c.owner))
	return c, nil
}

// parseIndex parses model.safetensors.index.json: {"metadata": {...},
// "weight_map": {tensor name: shard file name}}. Shard names must be plain
// file names in the index's directory.
func parseIndex(b []byte) (metadata map[string]any, weightMap map[string]string, err error) {
	r, err := newJSONReader(b, "index")
	if err != nil {
		return nil, nil, err
	}
	err = r.object("index", func(key string) error {
		switch key {
		case "metadata":
			if err := r.decode(&metadata); err != nil {
				return fmt.Errorf("metadata: %w", err)
			}
		case "weight_map":
			weightMap = map[string]string{}
			return r.object("weight_map", func(name string) error {
				if r.peek() != '"' {
					return fmt.Errorf("weight_map: tensor %q: shard is %s, want a file name", name, r.describe())
				}
				shard, err := r.string()
				if err != nil {
					return err
				}
				if shard == "" || shard == "." || shard == ".." || strings.ContainsAny(shard, `/\`) {
					return fmt.Errorf("weight_map: tensor %q: shard %q is not a file name in the index's directory", name, shard)
				}
				weightMap[name] = shard
				return nil
			})
		default:
			_, err := r.skip()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if weightMap == nil {
		return nil, nil, errors.New(`missing "weight_map"`)
	}
	return metadata, weightMap, nil
}

// OpenFiles opens safetensors files and reads them as one checkpoint
// without an index. A tensor name may appear in only one of them.
func OpenFiles(paths ...string) (*Checkpoint, error) {
	c := &Checkpoint{owner: map[string]*File{}}
	for _, path := range paths {
		f, err := Open(path)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.files = append(c.files, f)
		for _, name := range f.names {
			if other, ok := c.owner[name]; ok {
				c.Close()
				return nil, fmt.Errorf("safetensors: tensor %q is in both %s and %s", name, other.Path(), path)
			}
			c.owner[name] = f
		}
	}
	slices.SortFunc(c.files, func(a, b *File) int { return strings.Compare(a.path, b.path) })
	c.names = slices.Sorted(maps.Keys(c.owner))
	return c, nil
}

// Close closes every file of the checkpoint.
func (c *Checkpoint) Close() error {
	var errs []error
	for _, f := range c.files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}

// Names returns the names of the tensors, sorted.
func (c *Checkpoint) Names() []string { return slices.Clone(c.names) }

// Info describes the named tensor; its File is the shard that holds it.
func (c *Checkpoint) Info(name string) (TensorInfo, bool) {
	f, ok := c.owner[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.Info(name)
}

// Bytes returns the named tensor's bytes, a read-only view into its shard's
// mapping, valid until Close.
func (c *Checkpoint) Bytes(name string) ([]byte, error) {
	f, err := c.file(name)
	if err != nil {
		return nil, err
	}
	return f.Bytes(name)
}

// Tensor returns the named tensor; see File.Tensor.
func (c *Checkpoint) Tensor(name string) (*tensor.Tensor, error) {
	f, err := c.file(name)
	if err != nil {
		return nil, err
	}
	return f.Tensor(name)
}

func (c *Checkpoint) file(name string) (*File, error) {
	f, ok := c.owner[name]
	if !ok {
		return nil, fmt.Errorf("safetensors: checkpoint has no tensor %q", name)
	}
	return f, nil
}

// Files returns the paths of the checkpoint's files, sorted.
func (c *Checkpoint) Files() []string {
	paths := make([]string, len(c.files))
	for i, f := range c.files {
		paths[i] = f.Path()
	}
	return paths
}

// SizeOnDisk is the total size of the checkpoint's files in bytes.
func (c *Checkpoint) SizeOnDisk() int64 {
	var n int64
	for _, f := range c.files {
		n += f.Size()
	}
	return n
}

// Metadata returns the "metadata" object of the index (such as
// {"total_size": 16060522496}), numbers as json.Number; it is nil without
// an index. The metadata of each file is available from Open.
func (c *Checkpoint) Metadata() map[string]any { return maps.Clone(c.metadata) }
