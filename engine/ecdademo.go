package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/compassml/compass/sampling/cluster"
	"github.com/compassml/compass/sampling/drift"
	"github.com/compassml/compass/sampling/embed"
	"github.com/compassml/compass/tensor"
)

// The ECDA half of `compass demo --continual`: the adapter trained on a
// stream's first period goes into a registry as v1, the monitor learns that
// period's usage (its clusters), then reads texts that stay in the period
// and texts of the next one; when it confirms the drift, compass update
// continues v1 on data selected for the drifted window, with replay and
// EWC, as v2. The same steps `compass registry add`, `compass monitor
// --reference ... --update` and `compass update` take.

// ECDADemoOptions configure ECDADemo.
type ECDADemoOptions struct {
	Update    *AdaptConfig // the update's pipeline: model, pool, target language and its data, budget, training, evaluation
	AdapterV1 string       // the directory of the adapter registered as v1
	Name      string       // its name in the registry
	Reference string       // JSONL texts of the usage v1 serves, for the monitor's reference
	K         int          // the reference's clusters
	Stream    []string     // JSONL files the monitor reads, in order
	Window    int          // texts per window
	WorkDir   string       // registry/, the reference's embeddings and clusters
	Backend   tensor.Backend
	Version   string
	Out       io.Writer // the monitor's lines and the update's
	Log       io.Writer
}

// ECDADemoResult is what the demo did.
type ECDADemoResult struct {
	Monitor  *MonitorResult
	Updates  []*UpdateResult
	Registry string
}

// errStopMonitor ends the monitor after the first update: the demo shows
// one detection and one update.
var errStopMonitor = errors.New("the demo's update is done")

// ECDADemo registers, monitors and updates; see the comment above.
func ECDADemo(ctx context.Context, o ECDADemoOptions) (*ECDADemoResult, error) {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	res := &ECDADemoResult{Registry: filepath.Join(o.WorkDir, "registry")}
	// A fresh registry each run, so that a re-run shows v1 -> v2 again (the
	// update's pipeline steps are still reused from its work directory).
	if err := os.RemoveAll(res.Registry); err != nil {
		return nil, fmt.Errorf("ecda demo: %w", err)
	}
	if err := os.MkdirAll(o.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("ecda demo: %w", err)
	}
	reg, err := OpenRegistry(res.Registry)
	if err != nil {
		return nil, err
	}
	if _, err := reg.Add(o.Name, o.AdapterV1, VersionMeta{CompassVersion: o.Version, Note: "the stream's first period"}, true); err != nil {
		return nil, fmt.Errorf("ecda demo: %w", err)
	}

	// The monitor's reference: the first period's texts, embedded by the
	// model the adapter belongs to, and their clusters.
	em, err := LoadEmbedModel(o.Update.path(o.Update.Model), o.Backend)
	if err != nil {
		return nil, err
	}
	defer em.Close()
	usage := filepath.Join(o.WorkDir, "reference.safetensors")
	if _, err := Embed(ctx, EmbedOptions{Model: em, Input: o.Reference, Output: usage, MaxLen: o.Update.Embed.MaxLen}); err != nil {
		return nil, err
	}
	clusters := filepath.Join(o.WorkDir, "clusters")
	km := cluster.DefaultKMeansOptions(o.K)
	km.Seed = 1
	if _, err := Cluster(ClusterOptions{Inputs: []string{usage}, K: o.K, KMeans: km, Backend: o.Backend, OutputDir: clusters}); err != nil {
		return nil, err
	}
	ref, err := BuildDriftReference(usage, filepath.Join(clusters, "centroids.npy"), false, 0)
	if err != nil {
		return nil, err
	}
	if err := SaveDriftReference(DriftReferencePath(res.Registry, o.Name), ref); err != nil {
		return nil, err
	}

	// The stream, through the monitor; the first confirmed drift updates.
	var readers []io.Reader
	for _, path := range o.Stream {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("ecda demo: %w", err)
		}
		defer f.Close()
		readers = append(readers, f)
	}
	e, err := em.Embedder(embed.ModelOptions{MaxLen: o.Update.Embed.MaxLen})
	if err != nil {
		return nil, err
	}
	onDrift := func(record, texts string) error {
		fmt.Fprintf(o.Log, "ecda demo: drift confirmed: updating %s on the window's texts\n", o.Name)
		u, err := Update(ctx, o.Update, UpdateRequest{Registry: res.Registry, Adapter: o.Name, Usage: texts, DriftRecord: record},
			AdaptEnv{Backend: o.Backend, Version: o.Version, Log: o.Log})
		if err != nil {
			return err
		}
		res.Updates = append(res.Updates, u)
		fmt.Fprintf(o.Out, "update: %s %s now serves (parent %s): %d pool records selected for the drifted window, replay buffer %d of %d records\n",
			o.Name, u.Version.Version, u.Version.Parent, u.Selected, u.Replay, u.History)
		return errStopMonitor
	}
	mon, err := Monitor(ctx, MonitorOptions{
		Registry: res.Registry, Adapter: o.Name, Window: o.Window, Drift: drift.DefaultOptions(),
		Embedder: e, Input: io.MultiReader(readers...), Out: o.Out, Version: o.Version, OnDrift: onDrift,
	})
	if err != nil && !errors.Is(err, errStopMonitor) {
		return nil, err
	}
	res.Monitor = mon
	if len(res.Updates) == 0 {
		fmt.Fprintf(o.Out, "no drift confirmed: %s stays at its current version\n", o.Name)
	}
	return res, nil
}
