package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/tensor/safetensors"
)

// The adapter registry of COMPASS-ECDA: the versions of each adapter, where
// each came from, and which one serves.
//
// Layout under the registry directory DIR, for adapter NAME:
//
//	DIR/NAME/manifest.json          the versions and the current one (RegistryManifest)
//	DIR/NAME/versions/vN/           version N's files, copied byte for byte, never modified
//	DIR/NAME/current                a symbolic link to versions/vN of the current version
//	DIR/NAME/.lock                  held (flock) by a process changing the manifest
//	DIR/NAME/drift-reference.json   the monitor's reference (monitor.go)
//	DIR/NAME/drift/*.json           the monitor's drift records
//
// A writer holds the lock from reading the manifest to writing it back, so
// two processes never lose each other's change. Readers take no lock: the
// manifest is replaced whole by a rename, and a version directory is built
// under a temporary name and renamed into place before the manifest names
// it. A writer killed midway leaves at most a temporary directory or a
// version directory the manifest does not name; the next writer removes
// both, and readers never look at them.

// RegistryManifestName is the manifest's file name in DIR/NAME.
const RegistryManifestName = "manifest.json"

// DefaultRegistryLockTimeout is how long a writer waits for another
// process's lock before it gives up.
const DefaultRegistryLockTimeout = 30 * time.Second

// ErrRegistryLocked is wrapped by the error of a writer that waited for the
// lock in vain.
var ErrRegistryLocked = errors.New("registry locked")

// ErrRegistryChanged is Add's answer to a version built on one that is
// no longer current (VersionMeta.BuiltOn).
var ErrRegistryChanged = errors.New("the current version changed")

// errDirLocked is lockDir's answer when another process holds the
// directory.
var errDirLocked = errors.New("directory locked by another process")

// Trigger kinds: why a version was made.
const (
	TriggerInitial = "initial" // the adapter's first version
	TriggerDrift   = "drift"   // trained after a drift that compass monitor confirmed
	TriggerManual  = "manual"  // added by hand
)

// Trigger says why a version was made and, after a drift, the statistics
// of the window that confirmed it.
type Trigger struct {
	Kind   string  `json:"kind"`
	JS     float64 `json:"js,omitempty"`     // Jensen-Shannon divergence (bits) of the window
	PValue float64 `json:"p,omitempty"`      // the chi-square test's p-value
	Window int     `json:"window,omitempty"` // the window's index in the monitored stream
	Record string  `json:"record,omitempty"` // the drift record they come from
}

// DriftTrigger reads a drift record that Monitor wrote and returns the
// trigger of a version trained because of it.
func DriftTrigger(recordPath string) (Trigger, error) {
	data, err := os.ReadFile(recordPath)
	if err != nil {
		return Trigger{}, fmt.Errorf("registry: drift record: %w", err)
	}
	var rec DriftRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return Trigger{}, fmt.Errorf("registry: drift record %s: %w", recordPath, err)
	}
	w := rec.Window
	if !w.Confirmed {
		return Trigger{}, fmt.Errorf("registry: drift record %s: its window is not a confirmed drift", recordPath)
	}
	return Trigger{Kind: TriggerDrift, JS: w.JS, PValue: w.PValue, Window: w.Window, Record: recordPath}, nil
}

// VersionMeta is what the caller of Add says about a new version.
type VersionMeta struct {
	CompassVersion    string
	DataSelectionHash string             // identifies the data selection it was trained on
	Trigger           Trigger            // Kind "" means TriggerInitial for a first version, TriggerManual after
	Eval              map[string]float64 // evaluation scores by name
	Note              string

	// The continual update's files, optional: names of files in the
	// adapter directory, copied into the version with the adapter.
	ReplayBuffer string // the replay buffer of earlier training data
	Fisher       string // the diagonal Fisher information of the adapter's parameters (EWC)
	// ReplayHistory is how many records, over all versions' training data,
	// the replay buffer samples from (so that the next update keeps its
	// share).
	ReplayHistory int
	// BuiltOn, when set, is the version the adapter was trained from (an
	// update's): Add refuses it unless that version is still the current
	// one, so that the new version's parent is what it was built on.
	BuiltOn string
}

// AdapterVersion is one version in the manifest.
type AdapterVersion struct {
	Version           string             `json:"version"`          // "v1", "v2", ...
	Parent            string             `json:"parent,omitempty"` // the version that was current when it was added
	Created           time.Time          `json:"created"`
	CompassVersion    string             `json:"compass_version"`
	DataSelectionHash string             `json:"data_selection_hash,omitempty"`
	Trigger           Trigger            `json:"trigger"`
	Eval              map[string]float64 `json:"eval,omitempty"`
	Note              string             `json:"note,omitempty"`
	ReplayBuffer      string             `json:"replay_buffer,omitempty"`
	Fisher            string             `json:"fisher,omitempty"`
	ReplayHistory     int                `json:"replay_history,omitempty"`
	Files             map[string]string  `json:"files"` // file name -> SHA-256 (hex) of its bytes
}

// RegistryManifest is DIR/NAME/manifest.json.
type RegistryManifest struct {
	Adapter  string           `json:"adapter"`
	Current  string           `json:"current"` // the version that serves
	Versions []AdapterVersion `json:"versions"`
}

// Version returns the named version, or nil.
func (m *RegistryManifest) Version(version string) *AdapterVersion {
	for i := range m.Versions {
		if m.Versions[i].Version == version {
			return &m.Versions[i]
		}
	}
	return nil
}

// check verifies what the registry relies on: version names vN, unique,
// each parent an earlier version, and a current version if there is any.
func (m *RegistryManifest) check() error {
	seen := map[string]bool{}
	for i, v := range m.Versions {
		if _, err := versionNumber(v.Version); err != nil {
			return fmt.Errorf("version %d: %w", i, err)
		}
		if seen[v.Version] {
			return fmt.Errorf("version %s is listed twice", v.Version)
		}
		if v.Parent != "" && !seen[v.Parent] {
			return fmt.Errorf("version %s: parent %s is not an earlier version", v.Version, v.Parent)
		}
		if len(v.Files) == 0 {
			return fmt.Errorf("version %s has no files", v.Version)
		}
		for name := range v.Files {
			if !plainName(name) {
				return fmt.Errorf("version %s: file name %q is not a plain name", v.Version, name)
			}
		}
		seen[v.Version] = true
	}
	switch {
	case len(m.Versions) == 0 && m.Current != "":
		return fmt.Errorf("current version %s, but no versions", m.Current)
	case len(m.Versions) > 0 && !seen[m.Current]:
		return fmt.Errorf("current version %q is not one of the versions", m.Current)
	}
	return nil
}

// maxVersion bounds a version's number: the next version is the largest
// plus one, which must not wrap around to v1 on a hand-edited manifest.
const maxVersion = 1_000_000_000

// versionNumber parses "vN" (1 <= N <= maxVersion).
func versionNumber(version string) (int, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(version, "v"))
	if !strings.HasPrefix(version, "v") || err != nil || n < 1 || version != "v"+strconv.Itoa(n) {
		return 0, fmt.Errorf("version name %q: want v1, v2 and so on", version)
	}
	if n > maxVersion {
		return 0, fmt.Errorf("version name %q: more than v%d", version, maxVersion)
	}
	return n, nil
}

// plainName reports whether name is one path element.
func plainName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, `/\`)
}

// Registry is a directory of versioned adapters.
type Registry struct {
	dir string
	// LockTimeout is how long a writer waits for another process's lock;
	// 0 means DefaultRegistryLockTimeout.
	LockTimeout time.Duration
}

// OpenRegistry opens the registry in dir. The directory need not exist
// yet: the first Add creates it.
func OpenRegistry(dir string) (*Registry, error) {
	if dir == "" {
		return nil, fmt.Errorf("registry: no directory")
	}
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		return nil, fmt.Errorf("registry: %s is not a directory", dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("registry: %w", err)
	}
	return &Registry{dir: dir}, nil
}

// Dir is the registry's directory.
func (r *Registry) Dir() string { return r.dir }

func (r *Registry) adapterDir(name string) string { return filepath.Join(r.dir, name) }

func (r *Registry) manifestPath(name string) string {
	return filepath.Join(r.dir, name, RegistryManifestName)
}

// Names returns the adapters that have versions, sorted.
func (r *Registry) Names() ([]string, error) {
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if _, err := os.Stat(r.manifestPath(e.Name())); err == nil {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// readManifest reads and checks adapter name's manifest. A missing manifest
// is fs.ErrNotExist (wrapped).
func (r *Registry) readManifest(name string) (*RegistryManifest, error) {
	if !plainName(name) || strings.HasPrefix(name, ".") {
		return nil, fmt.Errorf("registry: adapter name %q is not a plain name", name)
	}
	path := r.manifestPath(name)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	var m RegistryManifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("registry: %s: %w", path, err)
	}
	if m.Adapter != name {
		return nil, fmt.Errorf("registry: %s is the manifest of adapter %q, not %q", path, m.Adapter, name)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("registry: %s: %w", path, err)
	}
	return &m, nil
}

// List returns adapter name's manifest: its versions, oldest first, and the
// current one.
func (r *Registry) List(name string) (*RegistryManifest, error) {
	m, err := r.readManifest(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("registry %s has no versions of adapter %q (no %s): add one with compass registry add", r.dir, name, r.manifestPath(name))
	}
	if err != nil {
		return nil, err
	}
	r.repairCurrentLink(name, m)
	return m, nil
}

// repairCurrentLink points the current link at the manifest's current
// version where a writer killed between writing the manifest and moving
// the link left it behind: what serves from the link must not wait for
// the next writer. Only with the lock free (a writer at work moves the
// link itself; the kernel dropped a killed one's lock), and at best
// effort: a registry this process cannot write keeps its link, and the
// read goes on.
func (r *Registry) repairCurrentLink(name string, m *RegistryManifest) {
	dir := r.adapterDir(name)
	if got, err := os.Readlink(filepath.Join(dir, "current")); m.Current == "" || err == nil && got == filepath.Join("versions", m.Current) {
		return
	}
	unlock, err := lockFile(filepath.Join(dir, ".lock"), 0)
	if err != nil {
		return
	}
	defer unlock()
	if fresh, err := r.readManifest(name); err == nil && fresh.Current != "" {
		_ = setCurrentLink(dir, fresh.Current) // at best effort, as above
	}
}

// Show returns a version of adapter name; "" is the current version.
func (r *Registry) Show(name, version string) (*AdapterVersion, error) {
	m, err := r.List(name)
	if err != nil {
		return nil, err
	}
	if version == "" {
		version = m.Current
	}
	v := m.Version(version)
	if v == nil {
		return nil, fmt.Errorf("registry: adapter %s has no version %q (it has %s)", name, version, versionNames(m))
	}
	return v, nil
}

func versionNames(m *RegistryManifest) string {
	var names []string
	for _, v := range m.Versions {
		names = append(names, v.Version)
	}
	return strings.Join(names, ", ")
}

// Path returns the directory of a version's files; "" is the current
// version. The files must not be modified.
func (r *Registry) Path(name, version string) (string, error) {
	v, err := r.Show(name, version)
	if err != nil {
		return "", err
	}
	return filepath.Join(r.adapterDir(name), "versions", v.Version), nil
}

// Verify checks that a version's directory holds exactly the files the
// manifest lists, with their SHA-256.
func (r *Registry) Verify(name, version string) error {
	v, err := r.Show(name, version)
	if err != nil {
		return err
	}
	return r.verify(name, v)
}

// verify is Verify of the version v of adapter name.
func (r *Registry) verify(name string, v *AdapterVersion) error {
	dir := filepath.Join(r.adapterDir(name), "versions", v.Version)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("registry: %s %s: %w", name, v.Version, err)
	}
	if len(entries) != len(v.Files) {
		return fmt.Errorf("registry: %s holds %d files, the manifest lists %d", dir, len(entries), len(v.Files))
	}
	for file, want := range v.Files {
		got, err := FileSHA256(filepath.Join(dir, file))
		if err != nil {
			return fmt.Errorf("registry: %s %s: %w", name, v.Version, err)
		}
		if got != want {
			return fmt.Errorf("registry: %s: SHA-256 %s, the manifest says %s: the file was modified", filepath.Join(dir, file), got, want)
		}
	}
	return nil
}

// Export copies a version's files ("" is the current version) to the new
// directory dst, byte for byte, checking each against the manifest's
// SHA-256. dst appears whole or not at all.
func (r *Registry) Export(name, version, dst string) error {
	v, err := r.Show(name, version)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("registry: export to %s: it exists", dst)
	}
	src := filepath.Join(r.adapterDir(name), "versions", v.Version)
	tmp, err := os.MkdirTemp(filepath.Dir(dst), ".tmp-"+filepath.Base(dst)+"-")
	if err != nil {
		return fmt.Errorf("registry: export: %w", err)
	}
	defer os.RemoveAll(tmp) // nothing left once renamed
	for _, file := range slices.Sorted(maps.Keys(v.Files)) {
		sum, err := copyFileSync(filepath.Join(src, file), filepath.Join(tmp, file))
		if err != nil {
			return fmt.Errorf("registry: export %s %s: %w", name, v.Version, err)
		}
		if sum != v.Files[file] {
			return fmt.Errorf("registry: export: %s: SHA-256 %s, the manifest says %s: the file was modified", filepath.Join(src, file), sum, v.Files[file])
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil { // MkdirTemp makes it private
		return fmt.Errorf("registry: export: %w", err)
	}
	if err := syncDir(tmp); err != nil {
		return fmt.Errorf("registry: export: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("registry: export: %w", err)
	}
	return nil
}

// registryHook is called at each step of Add; the crash tests kill the
// process there.
var registryHook = func(step string) {}

// Add copies the adapter in adapterDir (adapter_config.json and
// adapter_model.safetensors, plus meta's replay buffer and Fisher files)
// into a new version of adapter name, whose parent is the current version.
// The new version becomes current when promote is set, or when it is the
// first. It returns the new version's entry.
func (r *Registry) Add(name, adapterDir string, meta VersionMeta, promote bool) (*AdapterVersion, error) {
	files := []string{lora.WeightsName, lora.ConfigName}
	for _, extra := range []string{meta.ReplayBuffer, meta.Fisher} {
		if extra == "" {
			continue
		}
		if !plainName(extra) || slices.Contains(files, extra) {
			return nil, fmt.Errorf("registry: add: %q is not a file name of its own in the adapter directory", extra)
		}
		files = append(files, extra)
	}
	if err := checkAdapterDir(adapterDir); err != nil {
		return nil, fmt.Errorf("registry: add %s: %w", adapterDir, err)
	}
	for _, f := range files {
		if st, err := os.Stat(filepath.Join(adapterDir, f)); err != nil {
			return nil, fmt.Errorf("registry: add: %w", err)
		} else if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("registry: add: %s is not a regular file", filepath.Join(adapterDir, f))
		}
	}
	for k, s := range meta.Eval {
		if math.IsNaN(s) || math.IsInf(s, 0) {
			return nil, fmt.Errorf("registry: add: eval score %s is %v", k, s)
		}
	}
	switch meta.Trigger.Kind {
	case "", TriggerInitial, TriggerDrift, TriggerManual:
	default:
		return nil, fmt.Errorf("registry: add: trigger %q: want %s, %s or %s", meta.Trigger.Kind, TriggerInitial, TriggerDrift, TriggerManual)
	}

	var added AdapterVersion
	err := r.update(name, true, func(m *RegistryManifest) error {
		if meta.BuiltOn != "" && m.Current != meta.BuiltOn {
			return fmt.Errorf("%w: adapter %s was built on %s, but %s became current meanwhile (another update?); update again from %s",
				ErrRegistryChanged, name, meta.BuiltOn, m.Current, m.Current)
		}
		n := 1
		for _, v := range m.Versions {
			k, _ := versionNumber(v.Version) // checked on reading
			n = max(n, k+1)
		}
		version := "v" + strconv.Itoa(n)
		versions := filepath.Join(r.adapterDir(name), "versions")
		tmp, err := os.MkdirTemp(versions, ".tmp-"+version+"-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp) // nothing left once renamed
		sums := map[string]string{}
		for _, f := range files {
			if sums[f], err = copyFileSync(filepath.Join(adapterDir, f), filepath.Join(tmp, f)); err != nil {
				return err
			}
			registryHook("file copied")
		}
		if err := os.Chmod(tmp, 0o755); err != nil { // MkdirTemp makes it private
			return err
		}
		if err := syncDir(tmp); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(versions, version)); err != nil {
			return err
		}
		if err := syncDir(versions); err != nil {
			return err
		}
		registryHook("version renamed")

		trigger := meta.Trigger
		if trigger.Kind == "" {
			trigger.Kind = TriggerManual
			if len(m.Versions) == 0 {
				trigger.Kind = TriggerInitial
			}
		}
		added = AdapterVersion{
			Version: version, Parent: m.Current, Created: time.Now().UTC().Truncate(time.Second),
			CompassVersion: meta.CompassVersion, DataSelectionHash: meta.DataSelectionHash,
			Trigger: trigger, Eval: meta.Eval, Note: meta.Note,
			ReplayBuffer: meta.ReplayBuffer, Fisher: meta.Fisher, ReplayHistory: meta.ReplayHistory, Files: sums,
		}
		m.Versions = append(m.Versions, added)
		if promote || m.Current == "" {
			m.Current = version
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("registry: add %s to %s: %w", adapterDir, name, err)
	}
	return &added, nil
}

// checkAdapterDir refuses what is not an adapter: a config PEFT's rules
// accept and a weights file with a valid safetensors header.
func checkAdapterDir(dir string) error {
	if _, err := lora.ReadConfig(filepath.Join(dir, lora.ConfigName)); err != nil {
		return err
	}
	f, err := safetensors.Open(filepath.Join(dir, lora.WeightsName))
	if err != nil {
		return err
	}
	return f.Close()
}

// Promote makes version the current version of adapter name, once its
// files are checked against the manifest (a version that was modified is
// not served).
func (r *Registry) Promote(name, version string) error {
	err := r.update(name, false, func(m *RegistryManifest) error {
		v := m.Version(version)
		if v == nil {
			return fmt.Errorf("no version %q (it has %s)", version, versionNames(m))
		}
		if err := r.verify(name, v); err != nil {
			return err
		}
		m.Current = version
		return nil
	})
	if err != nil {
		return fmt.Errorf("registry: promote %s %s: %w", name, version, err)
	}
	return nil
}

// Rollback makes the current version's parent current, and returns it.
// The parent's files are what they were when it was added, byte for
// byte: checked against the manifest first.
func (r *Registry) Rollback(name string) (*AdapterVersion, error) {
	var to AdapterVersion
	err := r.update(name, false, func(m *RegistryManifest) error {
		cur := m.Version(m.Current)
		if cur == nil {
			return fmt.Errorf("no versions")
		}
		if cur.Parent == "" {
			return fmt.Errorf("the current version %s has no parent to roll back to", cur.Version)
		}
		if err := r.verify(name, m.Version(cur.Parent)); err != nil {
			return err
		}
		m.Current = cur.Parent
		to = *m.Version(cur.Parent)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("registry: rollback %s: %w", name, err)
	}
	return &to, nil
}

// update changes adapter name's manifest under its lock: it reads the
// manifest, removes what killed writers left, calls change and, if change
// succeeds, writes the manifest and points the current link at the
// current version. create allows an adapter without a manifest yet.
func (r *Registry) update(name string, create bool, change func(m *RegistryManifest) error) error {
	if !plainName(name) || strings.HasPrefix(name, ".") {
		return fmt.Errorf("adapter name %q is not a plain name", name)
	}
	dir := r.adapterDir(name)
	if !create {
		if _, err := r.List(name); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "versions"), 0o755); err != nil {
		return err
	}
	timeout := r.LockTimeout
	if timeout <= 0 {
		timeout = DefaultRegistryLockTimeout
	}
	unlock, err := lockFile(filepath.Join(dir, ".lock"), timeout)
	if err != nil {
		return err
	}
	defer unlock()

	m, err := r.readManifest(name)
	if errors.Is(err, fs.ErrNotExist) && create {
		m, err = &RegistryManifest{Adapter: name}, nil
	}
	if err != nil {
		return err
	}
	if err := removeRegistryLeftovers(dir, m); err != nil {
		return err
	}
	if err := change(m); err != nil {
		return err
	}
	if err := m.check(); err != nil {
		return fmt.Errorf("the new manifest: %w", err) // a bug: change broke it
	}
	if err := writeJSONFile(r.manifestPath(name), m); err != nil {
		return err
	}
	registryHook("manifest written")
	return setCurrentLink(dir, m.Current)
}

// removeRegistryLeftovers removes what a killed writer may have left in the adapter
// directory dir: temporary directories and links, and version directories
// the manifest does not name (renamed into place, the manifest not yet
// written). Only a lock holder may call it.
func removeRegistryLeftovers(dir string, m *RegistryManifest) error {
	versions := filepath.Join(dir, "versions")
	entries, err := os.ReadDir(versions)
	if err != nil {
		return err
	}
	for _, e := range entries {
		_, numErr := versionNumber(e.Name())
		orphan := numErr == nil && m.Version(e.Name()) == nil
		if strings.HasPrefix(e.Name(), ".tmp-") || orphan {
			if err := os.RemoveAll(filepath.Join(versions, e.Name())); err != nil {
				return fmt.Errorf("removing what a killed writer left: %w", err)
			}
		}
	}
	tmps, _ := filepath.Glob(filepath.Join(dir, ".current.tmp-*")) // the pattern is valid
	for _, t := range tmps {
		if err := os.Remove(t); err != nil {
			return fmt.Errorf("removing what a killed writer left: %w", err)
		}
	}
	return nil
}

// setCurrentLink points dir/current at versions/VERSION, replacing the
// link by a rename so that a reader always finds one.
func setCurrentLink(dir, version string) error {
	link := filepath.Join(dir, "current")
	target := filepath.Join("versions", version)
	if got, err := os.Readlink(link); err == nil && got == target {
		return nil
	}
	tmp := filepath.Join(dir, ".current.tmp-"+strconv.Itoa(os.Getpid()))
	os.Remove(tmp) // a leftover of ours
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("current link: %w", err)
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("current link: %w", err)
	}
	return syncDir(dir)
}

// copyFileSync copies src to the new file dst, syncs it, and returns the
// SHA-256 (hex) of the bytes copied.
func copyFileSync(src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(out, h), in); err != nil {
		out.Close()
		return "", fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return "", err
	}
	if err := out.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// FileSHA256 returns the SHA-256 (hex) of a file's bytes, such as a data
// selection manifest's for VersionMeta.DataSelectionHash.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err // a *PathError: "read PATH: ..."
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fileSums is the SHA-256 of each file.
func fileSums(paths []string) ([]string, error) {
	sums := make([]string, len(paths))
	for i, p := range paths {
		var err error
		if sums[i], err = FileSHA256(p); err != nil {
			return nil, err
		}
	}
	return sums, nil
}

// adapterFiles are the two files of a PEFT adapter directory, the ones
// that say what it computes (what the run identity and continual's score
// cache hash).
func adapterFiles(dir string) []string {
	return []string{filepath.Join(dir, lora.ConfigName), filepath.Join(dir, lora.WeightsName)}
}
