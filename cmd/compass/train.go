package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/compassml/compass/cgo"
	"github.com/compassml/compass/engine"
	"github.com/urfave/cli/v3"
)

// trainFlag is one flag of `compass train` and how it sets its option.
type trainFlag struct {
	flag  cli.Flag
	apply func(cmd *cli.Command, o *engine.TrainOptions)
}

func str(name, usage string, set func(*engine.TrainOptions, string)) trainFlag {
	return trainFlag{&cli.StringFlag{Name: name, Usage: usage}, func(c *cli.Command, o *engine.TrainOptions) { set(o, c.String(name)) }}
}

func strs(name, usage string, set func(*engine.TrainOptions, []string)) trainFlag {
	return trainFlag{&cli.StringSliceFlag{Name: name, Usage: usage}, func(c *cli.Command, o *engine.TrainOptions) { set(o, c.StringSlice(name)) }}
}

func integer(name, usage string, set func(*engine.TrainOptions, int)) trainFlag {
	return trainFlag{&cli.IntFlag{Name: name, Usage: usage, HideDefault: true}, func(c *cli.Command, o *engine.TrainOptions) { set(o, int(c.Int(name))) }}
}

func float(name, usage string, set func(*engine.TrainOptions, float64)) trainFlag {
	return trainFlag{&cli.FloatFlag{Name: name, Usage: usage, HideDefault: true}, func(c *cli.Command, o *engine.TrainOptions) { set(o, c.Float(name)) }}
}

func boolean(name, usage string, set func(*engine.TrainOptions, bool)) trainFlag {
	return trainFlag{&cli.BoolFlag{Name: name, Usage: usage}, func(c *cli.Command, o *engine.TrainOptions) { set(o, c.Bool(name)) }}
}

// trainFlags lists the flags; their defaults are DefaultTrainOptions', shown
// in the usage text, and a flag given on the command line overrides the
// --config file.
func trainFlags() []trainFlag {
	d := engine.DefaultTrainOptions()
	return []trainFlag{
		str("model", "checkpoint directory (config.json, safetensors, tokenizer.json)", func(o *engine.TrainOptions, v string) { o.Model = v }),
		strs("data", "training data file (JSONL, CSV, Parquet, optionally .zst); repeat or comma-separate for several", func(o *engine.TrainOptions, v []string) { o.Data = v }),
		str("schema", "data schema: auto, text, aya, chat, global-mmlu or mmlu-prox", func(o *engine.TrainOptions, v string) { o.Schema = v }),
		strs("eval-data", "held-out data files", func(o *engine.TrainOptions, v []string) { o.EvalData = v }),
		float("eval-split", "hold out this share of the training examples instead (e.g. 0.05)", func(o *engine.TrainOptions, v float64) { o.EvalSplit = v }),
		str("output", "the run's directory: checkpoints, final adapter, metrics", func(o *engine.TrainOptions, v string) { o.Output = v }),
		integer("seq-len", fmt.Sprintf("tokens per row (default %d)", d.SeqLen), func(o *engine.TrainOptions, v int) { o.SeqLen = v }),
		str("long", "longer examples: cut (keep the first seq-len tokens) or split (into several rows)", func(o *engine.TrainOptions, v string) { o.Long = v }),
		str("packing", "on: several examples per row, each attending only to itself; off: one example per row, padded", func(o *engine.TrainOptions, v string) { o.Packing = v == "on" }),
		str("loss-on", "aya pairs: target (loss on the answer only) or all", func(o *engine.TrainOptions, v string) { o.LossOn = v }),
		boolean("no-special", "text and aya: do not add the tokenizer's special tokens (BOS)", func(o *engine.TrainOptions, v bool) { o.Special = !v }),
		boolean("no-eos", "text and aya: do not append the end-of-sequence token", func(o *engine.TrainOptions, v bool) { o.EOS = !v }),
		boolean("skip-bad", "skip bad data rows (counted) instead of failing", func(o *engine.TrainOptions, v bool) { o.SkipBad = v }),
		integer("micro-batch", fmt.Sprintf("rows per forward-backward pass (default %d)", d.MicroBatch), func(o *engine.TrainOptions, v int) { o.MicroBatch = v }),
		integer("global-batch", fmt.Sprintf("rows per optimizer step, accumulated over micro-batches (default %d)", d.GlobalBatch), func(o *engine.TrainOptions, v int) { o.GlobalBatch = v; o.GlobalBatchTokens = 0 }),
		integer("global-batch-tokens", "token slots (rows x seq-len) per optimizer step, instead of --global-batch", func(o *engine.TrainOptions, v int) { o.GlobalBatchTokens = v; o.GlobalBatch = 0 }),
		integer("rank", fmt.Sprintf("LoRA rank r (default %d)", d.Rank), func(o *engine.TrainOptions, v int) { o.Rank = v }),
		float("alpha", fmt.Sprintf("LoRA alpha; scaling alpha/r (default %g)", d.Alpha), func(o *engine.TrainOptions, v float64) { o.Alpha = v }),
		float("dropout", "LoRA dropout on the adapters' input (default 0)", func(o *engine.TrainOptions, v float64) { o.Dropout = v }),
		str("targets", "adapted modules: all-linear, or names such as q_proj,v_proj (default all-linear)", func(o *engine.TrainOptions, v string) { o.Targets = v }),
		boolean("rslora", "scaling alpha/sqrt(r)", func(o *engine.TrainOptions, v bool) { o.RSLoRA = v }),
		str("init-adapter", "start from this PEFT adapter instead of PEFT's initialisation", func(o *engine.TrainOptions, v string) { o.InitAdapter = v }),
		float("lr", fmt.Sprintf("peak learning rate (default %g)", d.LR), func(o *engine.TrainOptions, v float64) { o.LR = v }),
		float("min-lr", "learning rate at the end of linear and cosine schedules (default 0)", func(o *engine.TrainOptions, v float64) { o.MinLR = v }),
		str("schedule", "learning-rate schedule: constant, linear or cosine (default cosine)", func(o *engine.TrainOptions, v string) { o.Schedule = v }),
		integer("warmup-steps", "linear warmup steps", func(o *engine.TrainOptions, v int) { o.WarmupSteps = v }),
		float("warmup-ratio", fmt.Sprintf("warmup as a share of the steps, when --warmup-steps is 0 (default %g)", d.WarmupRatio), func(o *engine.TrainOptions, v float64) { o.WarmupRatio = v }),
		float("weight-decay", "AdamW's decoupled weight decay (default 0)", func(o *engine.TrainOptions, v float64) { o.WeightDecay = v }),
		float("beta1", "AdamW beta1 (default 0.9)", func(o *engine.TrainOptions, v float64) { o.Beta1 = v }),
		float("beta2", "AdamW beta2 (default 0.999)", func(o *engine.TrainOptions, v float64) { o.Beta2 = v }),
		float("eps", "AdamW epsilon (default 1e-8)", func(o *engine.TrainOptions, v float64) { o.Eps = v }),
		float("max-grad-norm", fmt.Sprintf("clip the gradient's global 2-norm; 0: no clipping (default %g)", d.MaxGradNorm), func(o *engine.TrainOptions, v float64) { o.MaxGradNorm = v }),
		integer("epochs", fmt.Sprintf("passes over the data (default %d)", d.Epochs), func(o *engine.TrainOptions, v int) { o.Epochs = v }),
		integer("max-steps", "optimizer steps; overrides --epochs", func(o *engine.TrainOptions, v int) { o.MaxSteps = v }),
		boolean("recompute", "recompute each layer's activations in the backward (less memory)", func(o *engine.TrainOptions, v bool) { o.Recompute = v }),
		integer("seed", fmt.Sprintf("seed of the adapter's initialisation, the data order and dropout (default %d)", d.Seed), func(o *engine.TrainOptions, v int) { o.Seed = uint64(v) }),
		integer("eval-every", fmt.Sprintf("evaluate on the held-out data every N steps and at the end; 0: never (default %d)", d.EvalEvery), func(o *engine.TrainOptions, v int) { o.EvalEvery = v }),
		integer("eval-batches", "at most N held-out micro-batches per evaluation; 0: all", func(o *engine.TrainOptions, v int) { o.EvalBatches = v }),
		integer("patience", "stop after N evaluations without a better held-out loss; 0: never", func(o *engine.TrainOptions, v int) { o.Patience = v }),
		integer("save-every", fmt.Sprintf("write a checkpoint every N steps, and always at the end (default %d)", d.SaveEvery), func(o *engine.TrainOptions, v int) { o.SaveEvery = v }),
		integer("keep", fmt.Sprintf("keep the last N checkpoints; 0: all (default %d)", d.Keep), func(o *engine.TrainOptions, v int) { o.Keep = v }),
		str("resume", "continue a run: latest (the newest checkpoint in --output) or a checkpoint directory", func(o *engine.TrainOptions, v string) { o.Resume = v }),
		strs("replay-data", "ECDA: earlier rounds' data, replayed in every step with a weighted loss", func(o *engine.TrainOptions, v []string) { o.ReplayData = v }),
		float("replay-weight", fmt.Sprintf("weight of the replay loss (default %g)", engine.DefaultReplayWeight), func(o *engine.TrainOptions, v float64) { o.ReplayWeight = v }),
		integer("replay-batches", "replay micro-batches per optimizer step (default 1)", func(o *engine.TrainOptions, v int) { o.ReplayBatches = v }),
		str("ewc-fisher", "ECDA: the previous round's "+engine.FisherName+": an EWC penalty around --init-adapter", func(o *engine.TrainOptions, v string) { o.EWCFisher = v }),
		float("ewc-lambda", fmt.Sprintf("EWC weight lambda (default %g)", engine.DefaultEWCLambda), func(o *engine.TrainOptions, v float64) { o.EWCLambda = v }),
		integer("fisher-examples", "write OUTPUT/"+engine.FisherName+", the diagonal Fisher of the final adapter over N training examples, for the next round's EWC", func(o *engine.TrainOptions, v int) { o.FisherExamples = v }),
	}
}

func trainCommand() *cli.Command {
	flags := trainFlags()
	cliFlags := []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "JSON or YAML file of these options (keys as in training_config.json); flags override it"},
		deviceFlag(),
		&cli.BoolFlag{Name: "quiet", Usage: "no progress line on stderr"},
	}
	for _, f := range flags {
		cliFlags = append(cliFlags, f.flag)
	}
	return &cli.Command{
		Name:  "train",
		Usage: "train a LoRA adapter on one language's data",
		Description: "Writes into --output: checkpoint-NNNNNNNN/ every --save-every steps and at the end (adapter,\n" +
			"AdamW state, trainer_state.json), the final adapter (adapter_config.json,\n" +
			"adapter_model.safetensors), best/ (the adapter with the best held-out loss),\n" +
			"training_config.json, metrics.jsonl and loss.png. Ctrl-C finishes the current step,\n" +
			"saves, and says how to resume.",
		Flags: cliFlags,
		Action: func(ctx context.Context, cmd *cli.Command) error {
			opts := engine.DefaultTrainOptions()
			if path := cmd.String("config"); path != "" {
				var err error
				if opts, err = engine.ReadTrainConfig(path, opts); err != nil {
					return err
				}
			}
			if v := cmd.String("packing"); cmd.IsSet("packing") && v != "on" && v != "off" {
				return fmt.Errorf("train: --packing: %q: want on or off", v)
			}
			for _, f := range flags {
				if cmd.IsSet(f.flag.Names()[0]) {
					f.apply(cmd, &opts)
				}
			}
			opts.Data, opts.EvalData, opts.ReplayData = splitList(opts.Data), splitList(opts.EvalData), splitList(opts.ReplayData)
			opts.Device = cmd.String("device")
			if err := opts.Validate(); err != nil {
				return err
			}
			if err := checkOutput("output", opts.Output, "init-adapter", opts.InitAdapter); err != nil {
				return fmt.Errorf("train: %w", err)
			}
			be, release, err := openBackend(cmd)
			if err != nil {
				return err
			}
			defer release()
			errw := cmd.Root().ErrWriter
			env := engine.TrainEnv{Backend: be, Version: versionString(), Log: errw}
			if !cmd.Bool("quiet") && embedIsTerminal(errw) {
				env.Progress = errw
			}
			if be.Name() == "cuda" {
				env.DeviceMemory = deviceMemory
			}
			// Ctrl-C or SIGTERM: the step in progress finishes and a
			// checkpoint is saved; a second signal ends the command at once
			// (the last checkpoint on disk is intact).
			var stopSignal os.Signal
			ctx, stop := interruptible(ctx, func(s os.Signal) {
				stopSignal = s
				fmt.Fprintln(errw, "\ntrain: interrupted: finishing the step in progress, then saving a checkpoint (interrupt again to quit now)")
			}, exitOnSignal)
			defer stop()
			res, err := engine.Train(ctx, opts, env)
			if err != nil {
				return err
			}
			if res.Interrupted {
				status := 1 // cancelled otherwise than by a signal
				if stopSignal != nil {
					status = signalStatus(stopSignal)
				}
				if res.StepsThis == 0 {
					return &exitStatus{status, fmt.Errorf("train: interrupted before the first step: nothing saved")}
				}
				fmt.Fprintln(errw, "train:", res.Summary())
				return &exitStatus{status, fmt.Errorf("train: interrupted at step %d; saved %s (no final adapter in %s). Resume with the same flags and --resume latest",
					res.Steps, res.Checkpoint, opts.Output)}
			}
			fmt.Fprintln(errw, "train:", res.Summary())
			return nil
		},
	}
}

// splitList splits comma-separated entries of a list flag.
func splitList(in []string) []string {
	var out []string
	for _, s := range in {
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// deviceMemory is the memory in use on the first GPU, as NVML reports it.
func deviceMemory() (int64, bool) {
	r, err := cgo.ListGPUs()
	if err != nil || len(r.GPUs) == 0 {
		return 0, false
	}
	return int64(r.GPUs[0].MemoryUsed), true
}
