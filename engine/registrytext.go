package engine

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// The registry's text for people; --json gives the structs instead.

// String is the trigger on one line: "initial", "manual", or "drift js=...
// p=... window=N".
func (t Trigger) String() string {
	if t.Kind != TriggerDrift {
		return t.Kind
	}
	return fmt.Sprintf("drift js=%.4f p=%.3g window=%d", t.JS, t.PValue, t.Window)
}

// evalString is the scores as name=score, sorted by name.
func evalString(eval map[string]float64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(eval)) {
		parts = append(parts, fmt.Sprintf("%s=%.4g", k, eval[k]))
	}
	return strings.Join(parts, " ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteRegistryList writes the versions of a manifest as a table, the
// current one marked with *.
func WriteRegistryList(w io.Writer, m *RegistryManifest) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "adapter %s: %d versions, current %s\n", m.Adapter, len(m.Versions), orDash(m.Current))
	row(tw, "", "version", "parent", "created", "trigger", "eval", "note")
	for _, v := range m.Versions {
		mark := ""
		if v.Version == m.Current {
			mark = "*"
		}
		row(tw, mark, v.Version, orDash(v.Parent), v.Created.Format(time.RFC3339), v.Trigger.String(), orDash(evalString(v.Eval)), v.Note)
	}
	return tw.Flush()
}

// WriteRegistryVersion writes one version's entry; dir is where its files
// are.
func WriteRegistryVersion(w io.Writer, v *AdapterVersion, current bool, dir string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	status := ""
	if current {
		status = " (current)"
	}
	fmt.Fprintf(tw, "version\t%s%s\n", v.Version, status)
	fmt.Fprintf(tw, "path\t%s\n", dir)
	fmt.Fprintf(tw, "parent\t%s\n", orDash(v.Parent))
	fmt.Fprintf(tw, "created\t%s\n", v.Created.Format(time.RFC3339))
	fmt.Fprintf(tw, "compass version\t%s\n", orDash(v.CompassVersion))
	fmt.Fprintf(tw, "data selection\t%s\n", orDash(v.DataSelectionHash))
	trigger := v.Trigger.String()
	if v.Trigger.Record != "" {
		trigger += ", record " + v.Trigger.Record
	}
	fmt.Fprintf(tw, "trigger\t%s\n", trigger)
	fmt.Fprintf(tw, "eval\t%s\n", orDash(evalString(v.Eval)))
	fmt.Fprintf(tw, "note\t%s\n", orDash(v.Note))
	if v.ReplayBuffer != "" {
		fmt.Fprintf(tw, "replay buffer\t%s\n", v.ReplayBuffer)
	}
	if v.Fisher != "" {
		fmt.Fprintf(tw, "fisher\t%s\n", v.Fisher)
	}
	for i, f := range slices.Sorted(maps.Keys(v.Files)) {
		label := ""
		if i == 0 {
			label = "files (sha256)"
		}
		fmt.Fprintf(tw, "%s\t%s  %s\n", label, v.Files[f], f)
	}
	return tw.Flush()
}

// WriteText writes the differences as text: the config keys that differ,
// then one line per tensor.
func (d *AdapterDiff) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%s -> %s\n", d.A, d.B)
	if len(d.Config) == 0 {
		fmt.Fprintln(tw, "config: the same")
	} else {
		fmt.Fprintf(tw, "config: %d keys differ\n", len(d.Config))
	}
	for _, c := range d.Config {
		fmt.Fprintf(tw, "  %s\t%s -> %s\n", c.Key, orAbsent(c.A), orAbsent(c.B))
	}
	differ := 0
	for _, t := range d.Tensors {
		if !t.SameShape() || t.MaxAbsDiff != 0 {
			differ++
		}
	}
	fmt.Fprintf(tw, "tensors: %d in both (%d differ), %d only in %s, %d only in %s\n", len(d.Tensors), differ, len(d.OnlyA), d.A, len(d.OnlyB), d.B)
	if len(d.Tensors) > 0 {
		row(tw, "  tensor", "shape", "max |b-a|", "rel L2")
	}
	for _, t := range d.Tensors {
		if !t.SameShape() {
			row(tw, "  "+t.Name, fmt.Sprintf("%v -> %v", t.ShapeA, t.ShapeB), "-", "-")
			continue
		}
		row(tw, "  "+t.Name, fmt.Sprint(t.ShapeA), fmt.Sprintf("%.3g", t.MaxAbsDiff), fmt.Sprintf("%.3g", t.RelL2))
	}
	for _, name := range d.OnlyA {
		fmt.Fprintf(tw, "  only in %s: %s\n", d.A, name)
	}
	for _, name := range d.OnlyB {
		fmt.Fprintf(tw, "  only in %s: %s\n", d.B, name)
	}
	return tw.Flush()
}

// row writes one table row; empty cells at its end are left out, so that
// tabwriter pads no trailing blanks.
func row(w io.Writer, cells ...string) {
	fmt.Fprintln(w, strings.TrimRight(strings.Join(cells, "\t"), "\t"))
}

func orAbsent(s string) string {
	if s == "" {
		return "(absent)"
	}
	return s
}
