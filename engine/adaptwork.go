package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/compassml/compass/internal/atomicfile"
)

// The work directory holds one directory per finished step,
// <work>/<kind>/<key>, where key is the step's content address: a hash of
// its kind, its settings and the addresses of what it reads (the content
// of input files, the keys of earlier steps). A step runs in
// <key>.partial and is complete only once that directory has been renamed
// into place, so a run killed at any point leaves either a finished step
// or a partial one that the next run starts again (training resumes from
// its last checkpoint instead).

// adaptStep is one step of the pipeline.
type adaptStep struct {
	kind string // embed, cluster, select, train, eval
	name string // what it works on, for people: "sw compass seed 1"
	key  string
	// settings and inputs are what the key hashes, recorded in step.json.
	settings any
	inputs   []string
	run      func(s *adaptStep, dir string) (StepCost, error)

	dir    string // the finished directory, once planned
	reused bool
	cost   StepCost
}

// StepCost is what a step took.
type StepCost struct {
	Seconds   float64 `json:"seconds"`
	Tokens    int64   `json:"tokens"`               // tokens the model read
	PeakBytes int64   `json:"peak_bytes,omitempty"` // device memory, where known
}

// stepRecord is step.json, written last into a step's directory.
type stepRecord struct {
	Kind     string    `json:"kind"`
	Name     string    `json:"name"`
	Key      string    `json:"key"`
	Settings any       `json:"settings"`
	Inputs   []string  `json:"inputs"`
	Cost     StepCost  `json:"cost"`
	Version  string    `json:"version"`
	Finished time.Time `json:"finished"`
}

// stepKey hashes a step's kind, settings and inputs.
func stepKey(kind string, settings any, inputs []string) (string, error) {
	js, err := json.Marshal(settings)
	if err != nil {
		return "", fmt.Errorf("adapt: %s settings: %w", kind, err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "compass-adapt-v1\x00%s\x00%s\x00", kind, js)
	for _, in := range inputs {
		fmt.Fprintf(h, "%s\x00", in)
	}
	return hex.EncodeToString(h.Sum(nil))[:24], nil
}

// fileHashes remembers the content hash of each input file for one run.
type fileHashes map[string]string

// of returns "file:" + the SHA-256 of path's content.
func (fh fileHashes) of(path string) (string, error) {
	if h, ok := fh[path]; ok {
		return h, nil
	}
	sum, err := FileSHA256(path)
	if err != nil {
		return "", fmt.Errorf("adapt: %w", err)
	}
	fh[path] = "file:" + sum
	return fh[path], nil
}

// readStepRecord reads a finished step's step.json.
func readStepRecord(dir string) (*stepRecord, error) {
	data, err := os.ReadFile(filepath.Join(dir, "step.json"))
	if err != nil {
		return nil, err
	}
	var r stepRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("adapt: %s: %w", dir, err)
	}
	return &r, nil
}

// execute runs s unless its directory is already there (and force is
// false): in dir.partial, then step.json, then the rename that makes it
// complete.
func (s *adaptStep) execute(force bool, version string) error {
	if force {
		if err := os.RemoveAll(s.dir); err != nil {
			return fmt.Errorf("adapt: --force %s: %w", s.kind, err)
		}
	}
	if rec, err := readStepRecord(s.dir); err == nil {
		s.reused, s.cost = true, rec.Cost
		return nil
	}
	// A directory without step.json was not made by a finished step.
	if err := os.RemoveAll(s.dir); err != nil {
		return fmt.Errorf("adapt: %w", err)
	}
	tmp := s.dir + ".partial"
	if s.kind != "train" { // training resumes from its checkpoints; the rest starts again
		if err := os.RemoveAll(tmp); err != nil {
			return fmt.Errorf("adapt: %w", err)
		}
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fmt.Errorf("adapt: %w", err)
	}
	start := time.Now()
	cost, err := s.run(s, tmp)
	if err != nil {
		return fmt.Errorf("adapt: %s %s: %w", s.kind, s.name, err)
	}
	if cost.Seconds == 0 {
		cost.Seconds = time.Since(start).Seconds()
	}
	s.cost = cost
	rec := stepRecord{Kind: s.kind, Name: s.name, Key: s.key, Settings: s.settings, Inputs: s.inputs,
		Cost: cost, Version: version, Finished: time.Now().UTC()}
	js, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("adapt: %w", err)
	}
	if err := atomicfile.WriteBytes(filepath.Join(tmp, "step.json"), append(js, '\n')); err != nil {
		return fmt.Errorf("adapt: %s %s: %w", s.kind, s.name, err)
	}
	if err := os.Rename(tmp, s.dir); err != nil {
		return fmt.Errorf("adapt: %s %s: %w", s.kind, s.name, err)
	}
	if err := syncDir(filepath.Dir(s.dir)); err != nil {
		return fmt.Errorf("adapt: %s %s: %w", s.kind, s.name, err)
	}
	return nil
}
