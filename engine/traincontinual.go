package engine

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
	"github.com/compassml/compass/tensor/safetensors"
)

// What `compass train` adds for COMPASS-ECDA's continued training (the
// options ReplayData, EWCFisher and FisherExamples): replayed micro-batches
// in each step, the EWC penalty, and the Fisher of the result.

// FisherName is the file, in a run's output directory, of the diagonal
// Fisher of its final adapter (TrainOptions.FisherExamples), one tensor per
// LoRA parameter under its name in adapter_model.safetensors.
const FisherName = "fisher.safetensors"

// replayWeight is the weight of the replay loss: the option, or its
// default when replay data is given.
func (r *trainRun) replayWeight() float64 {
	if len(r.replayRows) == 0 {
		return 0
	}
	if r.opts.ReplayWeight > 0 {
		return r.opts.ReplayWeight
	}
	return DefaultReplayWeight
}

// replayMicro returns the replay micro-batches of optimizer step number
// step (from 0): ReplayBatches of them (default 1), walking the replay rows
// in a seeded order that changes each pass.
func (r *trainRun) replayMicro(step int) []model.Batch {
	if len(r.replayRows) == 0 {
		return nil
	}
	n := max(1, r.opts.ReplayBatches)
	mb := r.opts.MicroBatch
	perPass := (len(r.replayRows) + mb - 1) / mb
	out := make([]model.Batch, n)
	for j := range out {
		i := step*n + j
		order := dataset.Batches(r.replayRows, mb, r.opts.Seed^0x5eed, i/perPass)
		out[j] = rowsBatch(r.replayRows, order[i%perPass])
	}
	return out
}

// setupEWC loads the previous round's Fisher and anchors the penalty at
// the initial adapter (--init-adapter, which Validate requires with it).
func (r *trainRun) setupEWC() error {
	o := &r.opts
	if o.EWCFisher == "" {
		return nil
	}
	f, err := safetensors.Open(o.EWCFisher)
	if err != nil {
		return fmt.Errorf("train: --ewc-fisher: %w", err)
	}
	defer f.Close()
	anchor, err := lora.Load(o.InitAdapter, r.m.LinearModules())
	if err != nil {
		return fmt.Errorf("train: --init-adapter: %w", err)
	}
	fisher, anchors := map[string]*tensor.Tensor{}, map[string]*tensor.Tensor{}
	for _, module := range anchor.Modules {
		nameA, nameB := lora.TensorNames(module)
		for k, peft := range []string{nameA, nameB} {
			x, err := f.Tensor(peft)
			if err != nil {
				return fmt.Errorf("train: --ewc-fisher %s: %w (is it the Fisher of --init-adapter?)", o.EWCFisher, err)
			}
			name := trainerName(peft)
			fisher[name] = x
			anchors[name] = [2]*tensor.Tensor{anchor.A[module], anchor.B[module]}[k]
		}
	}
	lambda := o.EWCLambda
	if lambda == 0 {
		lambda = DefaultEWCLambda
	}
	if err := r.tr.SetEWC(lambda, fisher, anchors); err != nil {
		return fmt.Errorf("%w (--ewc-fisher %s)", err, o.EWCFisher)
	}
	fmt.Fprintf(r.env.Log, "train: EWC penalty, lambda %g, around %s with the Fisher of %s\n", lambda, o.InitAdapter, o.EWCFisher)
	return nil
}

// trainerName is the Trainer's name of a parameter ("<module>.lora_A.weight")
// from its name in adapter_model.safetensors.
func trainerName(peft string) string {
	a, _ := lora.TensorNames("")
	return strings.TrimPrefix(peft, strings.TrimSuffix(a, ".lora_A.weight"))
}

// fisherRows returns up to n of the examples, chosen with the seed, each
// as a row of its own (padded to seqLen): the Fisher's per-example
// gradients need one example per forward pass.
func fisherRows(ex []dataset.Example, n, seqLen int, pad int32, seed uint64) []dataset.Row {
	idx := rand.New(rand.NewPCG(seed, 0xf15)).Perm(len(ex))
	if len(idx) > n {
		idx = idx[:n]
	}
	rows := make([]dataset.Row, 0, len(idx))
	for _, i := range idx {
		rows = append(rows, dataset.Pad(ex[i:i+1], seqLen, pad)...)
	}
	return rows
}

// saveFisher estimates the Fisher of the final adapter on the Fisher rows
// and writes OUTPUT/fisher.safetensors.
func (r *trainRun) saveFisher() error {
	if len(r.fisherRows) == 0 {
		return nil
	}
	batches := make([]model.Batch, len(r.fisherRows))
	for i := range batches {
		batches[i] = rowsBatch(r.fisherRows, []int{i})
	}
	fisher, err := EstimateFisher(r.m, batches, nil)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	var entries []safetensors.Entry
	for _, module := range r.adapter.Modules {
		nameA, nameB := lora.TensorNames(module)
		for _, peft := range []string{nameA, nameB} {
			entries = append(entries, safetensors.EntryFromTensor(peft, fisher[trainerName(peft)]))
		}
	}
	path := filepath.Join(r.opts.Output, FisherName)
	meta := map[string]string{"examples": fmt.Sprint(len(batches)), "estimator": "mean of squared per-example gradients"}
	if err := safetensors.Write(path, entries, meta); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	fmt.Fprintf(r.env.Log, "train: wrote %s (Fisher over %d examples)\n", path, len(batches))
	return nil
}
