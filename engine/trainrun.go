package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/model/tokenizer"
	"github.com/compassml/compass/tensor"
)

// TrainEnv is what a training run gets from its caller besides options.
type TrainEnv struct {
	Backend tensor.Backend // nil: the CPU
	Version string         // compass's version, recorded in training_config.json
	// Log receives the run's one-line notes (data counts, resume, saves);
	// nil discards them.
	Log io.Writer
	// Progress, when not nil, receives a progress line redrawn in place
	// (the caller passes stderr only when it is a terminal).
	Progress io.Writer
	// DeviceMemory, when not nil, reports the device memory in use for the
	// progress line (NVML on a GPU).
	DeviceMemory func() (used int64, ok bool)

	// OnStep, when not nil, is called before each optimizer step with the
	// step's number (from 1) and its micro-batches: the benchmarks and the
	// parity test hand the same batches to the PyTorch reference.
	OnStep func(step int, micro []model.Batch)
}

// TrainResult sums up a run.
type TrainResult struct {
	Steps        int     `json:"steps"`      // optimizer steps done, in all sessions
	StepsThis    int     `json:"steps_this"` // done in this call
	Tokens       int64   `json:"tokens"`     // input tokens (rows x seq_len) processed in this call
	Seconds      float64 `json:"seconds"`    // training time of this call, loading excluded
	TokensPerSec float64 `json:"tokens_per_s"`
	LastLoss     float64 `json:"last_loss"`
	BestEvalLoss float64 `json:"best_eval_loss"` // NaN when there was no evaluation
	BestStep     int     `json:"best_step"`
	PeakBytes    int64   `json:"peak_bytes"` // peak device memory of the backend's allocator; 0 on the CPU
	Checkpoint   string  `json:"checkpoint"` // the last checkpoint written
	Interrupted  bool    `json:"interrupted"`
	EarlyStopped bool    `json:"early_stopped"`
}

// trainRun is one run's state: the model with its adapter, the trainer, the
// data as rows, and where the run stands.
type trainRun struct {
	opts     TrainOptions
	env      TrainEnv
	unlock   func() // releases --output (lockDir)
	m        *model.Model
	adapter  *lora.Adapter
	tr       *Trainer
	rows     []dataset.Row
	evalRows []dataset.Row
	// Continued training (traincontinual.go): replayed rows, and the
	// one-example rows the Fisher of the result is estimated on.
	replayRows, fisherRows []dataset.Row
	accum                  int // micro-batches per step
	perEpoch               int // micro-batches per epoch
	total                  int // optimizer steps of the run
	sched                  Schedule
	state                  trainerState
	identity               runIdentity
	metrics                *os.File
	// memoryHint, on a backend that reports its memory, is what a step
	// needs and what was left, for an out-of-memory error (checkMemory).
	memoryHint string
}

// Train runs `compass train`: it loads the model and the data, creates (or,
// with opts.Resume, restores) the adapter and its optimizer, and trains,
// evaluating and saving checkpoints as the options say, until the last
// step or early stopping; then it saves a last checkpoint and the final
// adapter. A cancelled context is not an error: the result says
// Interrupted, and the run stops after the step in progress and saves a
// checkpoint (when it took a step) but no final adapter; cancelled before
// the first step (reading the data, loading the model), it writes nothing.
func Train(ctx context.Context, opts TrainOptions, env TrainEnv) (*TrainResult, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if env.Log == nil {
		env.Log = io.Discard
	}
	r := &trainRun{opts: opts, env: env}
	defer r.close()
	if err := r.prepare(ctx); err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return &TrainResult{Interrupted: true, BestEvalLoss: math.NaN()}, nil // while reading the data: nothing written
		}
		return nil, err
	}
	return r.loop(ctx)
}

func (r *trainRun) close() {
	if r.metrics != nil {
		r.metrics.Close()
	}
	if r.tr != nil {
		r.tr.Close()
	}
	if r.m != nil {
		r.m.Close()
	}
	if r.unlock != nil {
		r.unlock()
	}
}

// prepare does everything that can fail on bad input before any step:
// options against the model, the data, the adapter, the checkpoint to
// resume.
func (r *trainRun) prepare(ctx context.Context) error {
	o := &r.opts
	cfg, err := model.LoadConfig(filepath.Join(o.Model, "config.json"))
	if err != nil {
		return fmt.Errorf("train: --model: %w", err)
	}
	if o.SeqLen > cfg.MaxPositionEmbeddings {
		return fmt.Errorf("train: --seq-len %d is beyond the model's maximum of %d positions (max_position_embeddings in %s)",
			o.SeqLen, cfg.MaxPositionEmbeddings, filepath.Join(o.Model, "config.json"))
	}
	// A rank past the hidden size is no longer a low-rank update: more
	// parameters than the projection it adapts (--rank 20000 on a hidden
	// size of 256 wrote a 2.3 GB adapter; 100000 ran out of memory).
	if o.Rank > cfg.HiddenSize {
		return fmt.Errorf("train: --rank %d is above the model's hidden size %d: a LoRA update of that rank is not low-rank", o.Rank, cfg.HiddenSize)
	}
	loraCfg, err := o.loraConfig()
	if err != nil {
		return err
	}
	if err := checkTargets(o.Targets, cfg); err != nil {
		return err
	}
	// The run's model is its content (model.CheckpointHash): a copy
	// elsewhere resumes, weights written over the same files do not.
	sig, err := model.CheckpointHash(o.Model)
	if err != nil {
		return fmt.Errorf("train: --model: %w", err)
	}
	sig = sig[:32]
	opts, err := o.identity()
	if err != nil {
		return err
	}
	tok, err := tokenizer.Load(o.Model)
	if err != nil {
		return fmt.Errorf("train: --model: the tokenizer: %w", err)
	}
	if err := r.loadData(ctx, tok, cfg); err != nil {
		return err
	}
	r.identity = runIdentity{Options: opts, Model: sig, Data: r.identity.Data, EvalData: r.identity.EvalData}

	// The output directory: a new run needs one without checkpoints. It
	// is looked at before anything is made (bad input writes nothing),
	// then again under the lock.
	if _, err := r.findResume(); err != nil {
		return err
	}
	if err := os.MkdirAll(o.Output, 0o755); err != nil {
		return fmt.Errorf("train: --output: %w", err)
	}
	// One run at a time writes into a directory: a second would remove the
	// first's half-written checkpoint as a leftover and prune its others.
	unlock, err := lockDir(o.Output)
	if errors.Is(err, errDirLocked) {
		return fmt.Errorf("train: --output %s: another run%s is writing into it; wait for it to end, or choose another directory", o.Output, dirLockHolder(o.Output))
	}
	if err != nil {
		return fmt.Errorf("train: --output: %w", err)
	}
	r.unlock = unlock
	// Looked at again under the lock: a run that held it may have left
	// checkpoints since.
	resumeDir, err := r.findResume()
	if err != nil {
		return err
	}
	removeLeftovers(o.Output)

	// The model and the adapter.
	if r.m, err = model.Load(o.Model, r.env.Backend); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err // interrupted while the weights loaded: nothing written yet
	}
	r.m.Recompute = o.Recompute
	r.m.LoRADropout = float32(o.Dropout)
	var start *lora.Adapter
	switch {
	case resumeDir != "":
		start, err = lora.Load(resumeDir, r.m.LinearModules())
		if err != nil {
			return fmt.Errorf("train: --resume: %w", err)
		}
	case o.InitAdapter != "":
		start, err = lora.Load(o.InitAdapter, r.m.LinearModules())
		if err != nil {
			return fmt.Errorf("train: --init-adapter: %w", err)
		}
	default:
		start, err = lora.New(loraCfg, r.m.LinearModules(), o.Seed)
		if err != nil {
			return fmt.Errorf("train: --targets/--rank: %w", err)
		}
	}
	r.adapter = start
	if err := r.m.AttachAdapter(start); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	r.tr, err = NewTrainer(r.m, AdamWConfig{LR: float32(o.LR), Beta1: float32(o.Beta1), Beta2: float32(o.Beta2),
		Eps: float32(o.Eps), WeightDecay: float32(o.WeightDecay)})
	if err != nil {
		return err
	}
	r.tr.MaxGradNorm = o.MaxGradNorm
	if err := r.setupEWC(); err != nil {
		return err
	}

	// The length of the run and its schedule.
	r.accum = o.accumulation()
	r.perEpoch = (len(r.rows) + o.MicroBatch - 1) / o.MicroBatch
	r.total = o.MaxSteps
	if r.total == 0 {
		r.total = (o.Epochs*r.perEpoch + r.accum - 1) / r.accum
	}
	warmup := o.WarmupSteps
	if warmup == 0 && o.WarmupRatio > 0 {
		warmup = int(math.Ceil(o.WarmupRatio * float64(r.total)))
	}
	r.sched = Schedule{Name: o.Schedule, LR: o.LR, MinLR: o.MinLR, Warmup: warmup, Total: r.total}
	r.state = trainerState{BestEvalLoss: math.Inf(1), Seed: o.Seed}
	if resumeDir != "" {
		if err := r.restore(resumeDir); err != nil {
			return err
		}
	}
	r.checkMemory(cfg)
	if err := r.writeConfig(); err != nil {
		return err
	}
	return r.openMetrics()
}

// memoryText writes n bytes in GiB, or MiB below one GiB.
func memoryText(n int64) string {
	if n < 1<<30 {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}

// memoryReporter is a backend that says how much device memory new
// tensors can still take (cgo.Backend).
type memoryReporter interface {
	AvailableBytes() (int64, error)
}

// stepMemoryRatio bounds a training step's own peak over
// model.EstimateLoRAMemory's Activations + Logits: the bound that
// TestGPUMemoryEstimate (on a GPU) and TestRecordedStepMemory (in CI) hold
// the published configs' steps to; measured 2.1 to 2.7.
const stepMemoryRatio = 2.75

// checkMemory says, on a backend that reports its memory, what a step may
// need beyond what the model, the adapter and the optimizer hold, against
// what is left, and warns when it may not fit. It keeps the numbers for
// the message of an out-of-memory error (memoryHint).
func (r *trainRun) checkMemory(cfg *model.Config) {
	mr, ok := r.m.Backend().(memoryReporter)
	if !ok {
		return
	}
	avail, err := mr.AvailableBytes()
	if err != nil {
		return
	}
	o := &r.opts
	var targets []string
	for _, m := range r.adapter.Modules {
		if name := m[strings.LastIndex(m, ".")+1:]; !slices.Contains(targets, name) {
			targets = append(targets, name)
		}
	}
	need := func(recompute bool) (int64, error) {
		est, err := model.EstimateLoRAMemory(cfg, model.MemoryOptions{SeqLen: o.SeqLen, Batch: o.MicroBatch,
			Rank: r.adapter.Config.R, Targets: targets, Recompute: recompute, LossChunk: r.m.LossChunk})
		return int64(stepMemoryRatio * float64(est.Activations+est.Logits)), err
	}
	step, err := need(o.Recompute)
	if err != nil {
		return
	}
	fmt.Fprintf(r.env.Log, "train: device memory: %s available after the model and adapter; a step of %d x %d tokens needs up to %s (%.2fx model.EstimateLoRAMemory's activations and logits)\n",
		memoryText(avail), o.MicroBatch, o.SeqLen, memoryText(step), stepMemoryRatio)
	r.memoryHint = fmt.Sprintf("a step of %d x %d tokens needs up to %s beyond the model and adapter, and %s were available",
		o.MicroBatch, o.SeqLen, memoryText(step), memoryText(avail))
	less := "a shorter --seq-len or a smaller --micro-batch needs less"
	if !o.Recompute {
		if withRecompute, err := need(true); err == nil {
			less = fmt.Sprintf("--recompute needs up to %s, and %s", memoryText(withRecompute), less)
		}
	}
	r.memoryHint += "; " + less
	if step > avail {
		fmt.Fprintf(r.env.Log, "train: warning: the step may run out of device memory: %s\n", less)
	}
}

// checkTargets requires every module named in --targets to be a linear
// module of the model (PEFT's rule: the name, or a dotted suffix of a
// module's name), so that a typo is an error and not an adapter that
// silently leaves that module out.
func checkTargets(targets string, cfg *model.Config) error {
	if targets == "all-linear" {
		return nil
	}
	var names []string
	for _, p := range cfg.Projections() {
		names = append(names, "model.layers.0."+p.Name)
	}
	for _, t := range strings.Split(targets, ",") {
		t = strings.TrimSpace(t)
		found := false
		for _, n := range names {
			found = found || n == t || strings.HasSuffix(n, "."+t)
		}
		if t != "" && !found {
			var short []string
			for _, p := range cfg.Projections() {
				short = append(short, p.Name[strings.LastIndex(p.Name, ".")+1:])
			}
			return fmt.Errorf("train: --targets: %q is not a linear module of this %s (it has %s)", t, cfg.Architecture, strings.Join(short, ", "))
		}
	}
	return nil
}

// removeLeftovers deletes the temporary files and directories that a run
// killed while saving leaves behind (they are never read).
func removeLeftovers(out string) {
	for _, dir := range []string{out, filepath.Join(out, "best")} {
		for _, pattern := range []string{".tmp-" + checkpointPrefix + "*", ".*.tmp*"} {
			matches, _ := filepath.Glob(filepath.Join(dir, pattern))
			for _, m := range matches {
				os.RemoveAll(m)
			}
		}
	}
}

// loraConfig builds the adapter's PEFT config from the options.
func (o *TrainOptions) loraConfig() (lora.Config, error) {
	c := lora.DefaultConfig()
	c.R, c.LoraAlpha, c.LoraDropout, c.UseRslora = o.Rank, o.Alpha, o.Dropout, o.RSLoRA
	if o.Targets == "all-linear" {
		c.TargetModules = lora.TargetString("all-linear")
	} else {
		var names []string
		for _, n := range strings.Split(o.Targets, ",") {
			if n = strings.TrimSpace(n); n != "" {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			return c, fmt.Errorf("train: --targets %q names no module", o.Targets)
		}
		c.TargetModules = lora.TargetNames(names...)
	}
	c.BaseModelNameOrPath = o.Model
	return c, nil
}

// loadData reads and tokenizes the training and held-out data and makes
// the rows.
func (r *trainRun) loadData(ctx context.Context, tok *tokenizer.Tokenizer, cfg *model.Config) error {
	o := &r.opts
	dopts := DataOptions{Schema: dataset.Schema(o.Schema), SeqLen: o.SeqLen, Long: o.Long, LossOn: o.LossOn,
		AddSpecial: o.Special, AppendEOS: o.EOS, SkipBad: o.SkipBad}
	if dopts.Schema == "auto" {
		dopts.Schema = ""
	}
	pad := int32(0)
	if len(cfg.EOSTokenIDs) > 0 {
		dopts.EOS, pad = int32(cfg.EOSTokenIDs[0]), int32(cfg.EOSTokenIDs[0])
	} else if o.EOS {
		fmt.Fprintln(r.env.Log, "train: the model's config.json names no eos_token_id: no end-of-sequence token is appended")
		dopts.AppendEOS = false
	}
	if chat, err := tok.Chat(""); err == nil {
		dopts.Chat = chat
	}
	load := func(files []string, what string) ([]dataset.Example, DataStats, error) {
		d := dopts
		d.Files = files
		prog := newDataProgress(r.env.Progress, what)
		d.Progress = prog.update
		ex, st, err := LoadExamples(ctx, tok, d)
		prog.clear()
		if err != nil {
			return nil, st, fmt.Errorf("train: %s: %w", what, err)
		}
		for _, e := range ex {
			for _, id := range e.IDs {
				if int(id) >= cfg.VocabSize {
					return nil, st, fmt.Errorf("train: %s: %s: token id %d is outside the model's vocabulary of %d", what, e.Source, id, cfg.VocabSize)
				}
			}
		}
		left := ""
		if st.Skipped > 0 || st.Empty > 0 {
			left = fmt.Sprintf("; left out: %d bad rows (--skip-bad), %d without a target token", st.Skipped, st.Empty)
		}
		fmt.Fprintf(r.env.Log, "train: %s: %d examples, %d tokens (%d targets); %d cut, %d split into more rows, %d tokens dropped past --seq-len %d%s\n",
			what, st.Examples, st.Tokens, st.TargetTokens, st.Cut, st.Split, st.DroppedTokens, o.SeqLen, left)
		return ex, st, nil
	}
	train, st, err := load(o.Data, "--data")
	if err != nil {
		return err
	}
	r.identity.Data = st.Files
	if len(o.ReplayData) > 0 {
		replay, _, err := load(o.ReplayData, "--replay-data")
		if err != nil {
			return err
		}
		if o.Packing {
			r.replayRows = dataset.Pack(replay, o.SeqLen, pad)
		} else {
			r.replayRows = dataset.Pad(replay, o.SeqLen, pad)
		}
	}
	if o.FisherExamples > 0 {
		r.fisherRows = fisherRows(train, o.FisherExamples, o.SeqLen, pad, o.Seed)
	}
	var eval []dataset.Example
	switch {
	case len(o.EvalData) > 0:
		var est DataStats
		if eval, est, err = load(o.EvalData, "--eval-data"); err != nil {
			return err
		}
		r.identity.EvalData = est.Files
	case o.EvalSplit > 0:
		if train, eval, err = dataset.Split(train, o.EvalSplit, o.Seed); err != nil {
			return fmt.Errorf("train: --eval-split %g: %w", o.EvalSplit, err)
		}
	}
	rowsOf := func(ex []dataset.Example) []dataset.Row {
		if o.Packing {
			return dataset.Pack(ex, o.SeqLen, pad)
		}
		return dataset.Pad(ex, o.SeqLen, pad)
	}
	r.rows, r.evalRows = rowsOf(train), rowsOf(eval)
	if len(r.rows) == 0 {
		return fmt.Errorf("train: --data %s: no usable training example", strings.Join(o.Data, ", "))
	}
	packing := map[bool]string{true: "packed", false: "padded, one example each"}[o.Packing]
	fmt.Fprintf(r.env.Log, "train: %d training rows of %d tokens (%s), %d held-out rows\n",
		len(r.rows), o.SeqLen, packing, len(r.evalRows))
	return nil
}

// microBatch returns the model batch of micro-batch number i of the run
// (counted over all epochs): the seeded order of epoch i / perEpoch.
func (r *trainRun) microBatch(i int, orders map[int][][]int) model.Batch {
	epoch := i / r.perEpoch
	order, ok := orders[epoch]
	if !ok {
		order = dataset.Batches(r.rows, r.opts.MicroBatch, r.opts.Seed, epoch)
		clear(orders) // keep one epoch's order
		orders[epoch] = order
	}
	return rowsBatch(r.rows, order[i%r.perEpoch])
}

// rowsBatch stacks rows into a model batch.
func rowsBatch(rows []dataset.Row, idx []int) model.Batch {
	T := len(rows[idx[0]].IDs)
	ids, labels := make([]int32, 0, len(idx)*T), make([]int32, 0, len(idx)*T)
	docs := make([][]int, 0, len(idx))
	for _, i := range idx {
		ids = append(ids, rows[i].IDs...)
		labels = append(labels, rows[i].Labels...)
		docs = append(docs, rows[i].DocLens)
	}
	idT, _ := tensor.FromI32(ids, len(idx), T)
	labT, _ := tensor.FromI32(labels, len(idx), T)
	return model.Batch{IDs: idT, Labels: labT, DocLens: docs}
}

// dropoutSeed is the seed of micro-batch i's dropout masks.
func dropoutSeed(seed uint64, i int) uint64 {
	z := seed ^ (uint64(i)+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// loop trains from the current state to the end of the run.
func (r *trainRun) loop(ctx context.Context) (*TrainResult, error) {
	o := &r.opts
	res := &TrainResult{BestEvalLoss: math.NaN()}
	orders := map[int][][]int{}
	prog := newTrainProgress(r.env.Progress, r.total, r.env.DeviceMemory)
	startStep := r.state.Step
	began := time.Now()
	var lastLoss float64
	for r.state.Step < r.total {
		if ctx.Err() != nil {
			res.Interrupted = true
			break
		}
		step := r.state.Step
		lr := r.sched.At(step)
		micro, seeds := make([]model.Batch, r.accum), make([]uint64, r.accum)
		for j := range micro {
			i := r.state.MicroBatch + j
			micro[j], seeds[j] = r.microBatch(i, orders), dropoutSeed(o.Seed, i)
		}
		if r.env.OnStep != nil {
			r.env.OnStep(step+1, micro)
		}
		t0 := time.Now()
		replay := r.replayMicro(step)
		for j := range replay {
			seeds = append(seeds, dropoutSeed(o.Seed^0x5eed, step*len(replay)+j))
		}
		sr, err := r.tr.TrainStepReplay(micro, replay, r.replayWeight(), seeds, lr)
		if err != nil {
			prog.clear()
			return nil, r.stopped(err)
		}
		r.state.Step++
		r.state.MicroBatch += r.accum
		tokens := int64(r.accum * o.MicroBatch * o.SeqLen)
		for _, b := range micro {
			tokens -= int64((o.MicroBatch - b.IDs.Dim(0)) * o.SeqLen) // a short last batch
		}
		res.Tokens += tokens
		r.state.Tokens += tokens
		lastLoss = sr.Loss
		elapsed := time.Since(began).Seconds()
		rec := map[string]any{"type": "train", "step": r.state.Step, "loss": sr.Loss, "lr": sr.LR, "grad_norm": sr.GradNorm,
			"target_tokens": sr.Tokens, "tokens": tokens, "step_s": time.Since(t0).Seconds(),
			"tokens_per_s": float64(res.Tokens) / elapsed, "epoch": float64(r.state.MicroBatch) / float64(r.perEpoch)}
		if len(replay) > 0 || r.tr.ewc != nil {
			rec["replay_loss"], rec["penalty"], rec["objective"] = sr.ReplayLoss, sr.Penalty, sr.Objective
		}
		if err := r.writeMetric(rec); err != nil {
			return nil, err
		}
		prog.update(r.state.Step, sr.Loss, sr.LR, float64(res.Tokens)/elapsed, elapsed/float64(r.state.Step-startStep))

		stop := false
		if o.EvalEvery > 0 && len(r.evalRows) > 0 && (r.state.Step%o.EvalEvery == 0 || r.state.Step == r.total) {
			better, err := r.evaluate()
			if err != nil {
				prog.clear()
				return nil, r.stopped(err)
			}
			if !better && o.Patience > 0 && r.state.EvalsWithoutBetter >= o.Patience {
				fmt.Fprintf(r.env.Log, "\ntrain: early stop at step %d: no better eval loss in %d evaluations (best %.4f at step %d)\n",
					r.state.Step, o.Patience, r.state.BestEvalLoss, r.state.BestStep)
				res.EarlyStopped, stop = true, true
			}
		}
		if o.SaveEvery > 0 && r.state.Step%o.SaveEvery == 0 && r.state.Step < r.total && !stop {
			if err := r.save(); err != nil {
				return nil, err
			}
		}
		if stop {
			break
		}
	}
	prog.clear()
	res.Seconds = time.Since(began).Seconds()
	// An interrupted run saves a checkpoint to resume from (nothing when
	// it took no step), but not the final adapter: OUTPUT's adapter files
	// mean a finished run.
	if res.Interrupted && r.state.Step == startStep {
		res.Steps, res.Checkpoint = r.state.Step, r.state.Checkpoint
		return res, nil
	}
	if err := r.save(); err != nil {
		return nil, err
	}
	if !res.Interrupted {
		if err := r.saveAdapter(r.opts.Output); err != nil {
			return nil, err
		}
		if err := r.saveFisher(); err != nil {
			return nil, err
		}
	}
	if err := r.plot(); err != nil {
		return nil, err
	}
	res.Steps, res.StepsThis, res.LastLoss = r.state.Step, r.state.Step-startStep, lastLoss
	if res.Seconds > 0 {
		res.TokensPerSec = float64(res.Tokens) / res.Seconds
	}
	if r.state.BestStep > 0 {
		res.BestEvalLoss, res.BestStep = r.state.BestEvalLoss, r.state.BestStep
	}
	if p, ok := r.m.Backend().(interface{ PeakBytes() int64 }); ok {
		res.PeakBytes = p.PeakBytes()
	}
	res.Checkpoint = r.state.Checkpoint
	return res, nil
}

// stopped is the error a run stops with when a step or an evaluation
// fails: with the memory hint when it ran out of device memory, and what
// is left on disk.
func (r *trainRun) stopped(err error) error {
	if errors.Is(err, tensor.ErrOutOfMemory) && r.memoryHint != "" {
		err = fmt.Errorf("%w (%s)", err, r.memoryHint)
	}
	last := "no checkpoint was written yet"
	if r.state.Checkpoint != "" {
		last = "the last checkpoint, " + r.state.Checkpoint + ", is intact"
	}
	return fmt.Errorf("%w; stopped without saving: %s", err, last)
}

// evaluate computes the loss over the held-out rows, records it, and keeps
// the adapter in OUTPUT/best when it is the best so far.
func (r *trainRun) evaluate() (better bool, err error) {
	o := &r.opts
	sum, count := 0.0, 0
	for start, n := 0, 0; start < len(r.evalRows); start, n = start+o.MicroBatch, n+1 {
		if o.EvalBatches > 0 && n >= o.EvalBatches {
			break
		}
		idx := make([]int, 0, o.MicroBatch)
		for i := start; i < min(start+o.MicroBatch, len(r.evalRows)); i++ {
			idx = append(idx, i)
		}
		b := rowsBatch(r.evalRows, idx)
		if countTargets(b) == 0 {
			continue
		}
		out, err := r.m.Forward(b)
		if err != nil {
			return false, fmt.Errorf("train: eval at step %d: %w", r.state.Step, err)
		}
		sum += out.Loss * float64(out.Tokens)
		count += out.Tokens
	}
	if count == 0 {
		return false, fmt.Errorf("train: eval at step %d: the held-out data has no target token", r.state.Step)
	}
	loss := sum / float64(count)
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return false, fmt.Errorf("train: eval at step %d: loss is %v", r.state.Step, loss)
	}
	better = loss < r.state.BestEvalLoss
	if better {
		r.state.BestEvalLoss, r.state.BestStep, r.state.EvalsWithoutBetter = loss, r.state.Step, 0
		if err := r.saveAdapter(filepath.Join(o.Output, "best")); err != nil {
			return false, err
		}
	} else {
		r.state.EvalsWithoutBetter++
	}
	return better, r.writeMetric(map[string]any{"type": "eval", "step": r.state.Step, "eval_loss": loss,
		"perplexity": math.Exp(loss), "target_tokens": count, "best": better})
}

// saveAdapter writes the current adapter weights as a PEFT adapter in dir.
func (r *trainRun) saveAdapter(dir string) error {
	a, err := r.currentAdapter()
	if err != nil {
		return err
	}
	if err := a.Save(dir); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	return nil
}

// currentAdapter copies the trained weights into a host adapter.
func (r *trainRun) currentAdapter() (*lora.Adapter, error) {
	out := &lora.Adapter{Config: r.adapter.Config, Modules: r.adapter.Modules,
		A: map[string]*tensor.Tensor{}, B: map[string]*tensor.Tensor{}}
	be := r.m.Backend()
	for name, p := range r.m.LoRAParams() {
		for k, x := range p {
			h, err := be.ToHost(x)
			if err != nil {
				return nil, fmt.Errorf("train: adapter %s: %w", name, err)
			}
			if h == x {
				h = tensor.New(tensor.F32, x.Shape()...)
				copy(h.Bytes(), x.Bytes())
			}
			if k == 0 {
				out.A[name] = h
			} else {
				out.B[name] = h
			}
		}
	}
	return out, nil
}

// errResumeMissing is returned when --resume finds no checkpoint.
var errResumeMissing = errors.New("no checkpoint to resume")

// writeConfig saves training_config.json: every option's effective value,
// the version, the model signature and the data hashes.
func (r *trainRun) writeConfig() error {
	c := map[string]any{
		"options":         r.opts,
		"compass_version": r.env.Version,
		"model_signature": r.identity.Model,
		"data":            r.identity.Data,
		"eval_data":       r.identity.EvalData,
		"backend":         r.m.Backend().Name(),
		"accumulation":    r.accum,
		"total_steps":     r.total,
		"warmup_steps":    r.sched.Warmup,
		"rows":            len(r.rows),
		"eval_rows":       len(r.evalRows),
		"lora":            json.RawMessage(mustJSON(r.adapter.Config.Encode())),
	}
	return writeJSONFile(filepath.Join(r.opts.Output, "training_config.json"), c)
}

func mustJSON(b []byte, err error) []byte {
	if err != nil {
		return []byte("null")
	}
	return b
}
