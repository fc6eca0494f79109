package engine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// TrainOptions are the settings of one training run: every flag of
// `compass train`, with the same names in a --config file and in the run's
// training_config.json.
type TrainOptions struct {
	Model  string   `json:"model"`  // checkpoint directory
	Data   []string `json:"data"`   // training data files
	Schema string   `json:"schema"` // dataset schema; "" or "auto": from the columns
	// Held-out data: files, or a share of the training examples.
	EvalData  []string `json:"eval_data,omitempty"`
	EvalSplit float64  `json:"eval_split"`
	Output    string   `json:"output"` // the run's directory

	SeqLen  int    `json:"seq_len"`  // tokens per row
	Long    string `json:"long"`     // examples longer than seq_len: "cut" or "split"
	Packing bool   `json:"packing"`  // pack several examples into a row
	LossOn  string `json:"loss_on"`  // aya pairs: "target" or "all"
	Special bool   `json:"special"`  // text/aya: add the tokenizer's special tokens (BOS)
	EOS     bool   `json:"eos"`      // text/aya: append the end-of-sequence token, with loss
	SkipBad bool   `json:"skip_bad"` // skip bad rows instead of failing

	MicroBatch        int `json:"micro_batch"`         // rows per forward-backward pass
	GlobalBatch       int `json:"global_batch"`        // rows per optimizer step (a multiple of micro_batch)
	GlobalBatchTokens int `json:"global_batch_tokens"` // or token slots (rows x seq_len) per step

	Rank         int     `json:"rank"`
	Alpha        float64 `json:"alpha"`
	Dropout      float64 `json:"dropout"`
	Targets      string  `json:"targets"` // "all-linear" or a comma-separated list of module names
	RSLoRA       bool    `json:"rslora"`
	InitAdapter  string  `json:"init_adapter,omitempty"` // start from this PEFT adapter instead of PEFT's init
	LR           float64 `json:"lr"`
	MinLR        float64 `json:"min_lr"`
	Schedule     string  `json:"schedule"`
	WarmupSteps  int     `json:"warmup_steps"`
	WarmupRatio  float64 `json:"warmup_ratio"`
	WeightDecay  float64 `json:"weight_decay"`
	Beta1        float64 `json:"beta1"`
	Beta2        float64 `json:"beta2"`
	Eps          float64 `json:"eps"`
	MaxGradNorm  float64 `json:"max_grad_norm"`
	Epochs       int     `json:"epochs"`
	MaxSteps     int     `json:"max_steps"` // overrides epochs when > 0
	Recompute    bool    `json:"recompute"`
	Seed         uint64  `json:"seed"`
	EvalEvery    int     `json:"eval_every"`
	EvalBatches  int     `json:"eval_batches"` // at most this many eval micro-batches; 0: all
	SaveEvery    int     `json:"save_every"`
	Keep         int     `json:"keep"`
	Patience     int     `json:"patience"`
	Resume       string  `json:"resume,omitempty"` // "", "latest" or a checkpoint directory
	Device       string  `json:"device,omitempty"` // recorded; the caller opens the backend
	Quiet        bool    `json:"quiet,omitempty"`
	ProgressSecs float64 `json:"-"`

	// COMPASS-ECDA's continued training (ewc.go): earlier rounds' data
	// replayed with a weighted loss, an EWC penalty around InitAdapter
	// weighted by the previous round's Fisher, and the Fisher of this
	// run's result for the next round. All off when unset.
	ReplayData     []string `json:"replay_data,omitempty"`
	ReplayWeight   float64  `json:"replay_weight,omitempty"`   // 0 with replay_data: DefaultReplayWeight
	ReplayBatches  int      `json:"replay_batches,omitempty"`  // replay micro-batches per step; 0: 1
	EWCFisher      string   `json:"ewc_fisher,omitempty"`      // the previous round's fisher.safetensors
	EWCLambda      float64  `json:"ewc_lambda,omitempty"`      // 0 with ewc_fisher: DefaultEWCLambda
	FisherExamples int      `json:"fisher_examples,omitempty"` // write OUTPUT/fisher.safetensors over this many training examples
}

// DefaultTrainOptions returns the defaults of `compass train`.
func DefaultTrainOptions() TrainOptions {
	return TrainOptions{
		SeqLen: 2048, Long: "cut", Packing: true, LossOn: "target", Special: true, EOS: true,
		MicroBatch: 4, GlobalBatch: 16,
		Rank: 16, Alpha: 32, Targets: "all-linear",
		LR: 2e-4, Schedule: "cosine", WarmupRatio: 0.03, WeightDecay: 0.0,
		Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, MaxGradNorm: 1.0, Epochs: 1,
		Seed: 42, EvalEvery: 100, SaveEvery: 500, Keep: 3,
	}
}

// ReadTrainConfig reads a JSON or YAML file of TrainOptions over base: the
// keys it has replace base's values; an unknown key is an error naming it.
func ReadTrainConfig(path string, base TrainOptions) (TrainOptions, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return base, fmt.Errorf("train: config: %w", err)
	}
	ext := strings.ToLower(filepath.Ext(path))
	if ext == ".yaml" || ext == ".yml" {
		var v any
		if err := yaml.Unmarshal(data, &v); err != nil {
			return base, fmt.Errorf("train: config %s: %w", path, err)
		}
		if data, err = json.Marshal(v); err != nil {
			return base, fmt.Errorf("train: config %s: %w", path, err)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&base); err != nil {
		return base, fmt.Errorf("train: config %s: %w", path, err)
	}
	return base, nil
}

// Validate checks the options that need no file: each bad value is an error
// naming its flag.
func (o *TrainOptions) Validate() error {
	bad := func(flag, format string, a ...any) error {
		return fmt.Errorf("train: --%s: %s", flag, fmt.Sprintf(format, a...))
	}
	switch {
	case o.Model == "":
		return bad("model", "a checkpoint directory is required")
	case len(o.Data) == 0:
		return bad("data", "at least one data file is required")
	case o.Output == "":
		return bad("output", "an output directory is required")
	case o.SeqLen < 2:
		return bad("seq-len", "%d: at least 2 tokens", o.SeqLen)
	case o.Long != "cut" && o.Long != "split":
		return bad("long", "%q: want cut or split", o.Long)
	case o.LossOn != "target" && o.LossOn != "all":
		return bad("loss-on", "%q: want target or all", o.LossOn)
	case o.MicroBatch < 1:
		return bad("micro-batch", "%d: at least 1", o.MicroBatch)
	case o.GlobalBatch < 0 || o.GlobalBatchTokens < 0:
		return bad("global-batch", "must not be negative")
	case o.GlobalBatch > 0 && o.GlobalBatchTokens > 0:
		return bad("global-batch-tokens", "give --global-batch or --global-batch-tokens, not both")
	case o.GlobalBatch > 0 && o.GlobalBatch%o.MicroBatch != 0:
		return bad("global-batch", "%d rows is not a multiple of --micro-batch %d", o.GlobalBatch, o.MicroBatch)
	case o.Rank < 1:
		return bad("rank", "%d: the LoRA rank must be at least 1", o.Rank)
	case !(o.Alpha > 0):
		return bad("alpha", "%g: must be positive", o.Alpha)
	case !(o.Dropout >= 0 && o.Dropout < 1): // and not NaN, as every range test below
		return bad("dropout", "%g: want [0, 1)", o.Dropout)
	case o.Targets == "":
		return bad("targets", "name the adapted modules, or all-linear")
	case o.WarmupSteps < 0:
		return bad("warmup-steps", "%d: must not be negative", o.WarmupSteps)
	case !(o.WarmupRatio >= 0 && o.WarmupRatio <= 1):
		return bad("warmup-ratio", "%g: want [0, 1]", o.WarmupRatio)
	case !(o.WeightDecay >= 0) || math.IsInf(o.WeightDecay, 1):
		return bad("weight-decay", "%g: must be finite and not negative", o.WeightDecay)
	case !(o.Beta1 >= 0 && o.Beta1 < 1):
		return bad("beta1", "%g: want [0, 1)", o.Beta1)
	case !(o.Beta2 >= 0 && o.Beta2 < 1):
		return bad("beta2", "%g: want [0, 1)", o.Beta2)
	case !(o.Eps > 0) || math.IsInf(o.Eps, 1):
		return bad("eps", "%g: must be finite and positive", o.Eps)
	case !(o.MaxGradNorm >= 0):
		return bad("max-grad-norm", "%g: must not be negative (0 disables clipping)", o.MaxGradNorm)
	case o.Epochs < 0:
		return bad("epochs", "%d: must not be negative", o.Epochs)
	case o.MaxSteps < 0:
		return bad("max-steps", "%d: must not be negative", o.MaxSteps)
	case o.Epochs < 1 && o.MaxSteps < 1:
		return bad("epochs", "give --epochs or --max-steps")
	case !(o.EvalSplit >= 0 && o.EvalSplit < 1):
		return bad("eval-split", "%g: want [0, 1)", o.EvalSplit)
	case o.EvalSplit > 0 && len(o.EvalData) > 0:
		return bad("eval-split", "give --eval-data or --eval-split, not both")
	case o.EvalEvery < 0:
		return bad("eval-every", "%d: must not be negative", o.EvalEvery)
	case o.SaveEvery < 0:
		return bad("save-every", "%d: must not be negative", o.SaveEvery)
	case o.Keep < 0:
		return bad("keep", "%d: must not be negative", o.Keep)
	case o.Patience < 0:
		return bad("patience", "%d: must not be negative", o.Patience)
	case o.EvalBatches < 0:
		return bad("eval-batches", "%d: must not be negative", o.EvalBatches)
	case !(o.ReplayWeight >= 0) || math.IsInf(o.ReplayWeight, 1):
		return bad("replay-weight", "%g: must be finite and not negative", o.ReplayWeight)
	case o.ReplayBatches < 0:
		return bad("replay-batches", "%d: must not be negative", o.ReplayBatches)
	case !(o.EWCLambda >= 0) || math.IsInf(o.EWCLambda, 1):
		return bad("ewc-lambda", "%g: must be finite and not negative", o.EWCLambda)
	case o.EWCFisher != "" && o.InitAdapter == "":
		return bad("ewc-fisher", "the EWC penalty is around the previous round's adapter: give it as --init-adapter")
	case o.FisherExamples < 0:
		return bad("fisher-examples", "%d: must not be negative", o.FisherExamples)
	}
	s := Schedule{Name: o.Schedule, LR: o.LR, MinLR: o.MinLR}
	if err := s.Validate(); err != nil {
		return fmt.Errorf("train: --schedule/--lr/--min-lr: %w", err)
	}
	if math.IsNaN(o.LR) {
		return bad("lr", "NaN")
	}
	if math.IsNaN(o.MinLR) {
		return bad("min-lr", "NaN")
	}
	return nil
}

// accumulation is how many micro-batches make one optimizer step.
func (o *TrainOptions) accumulation() int {
	switch {
	case o.GlobalBatchTokens > 0:
		per := o.MicroBatch * o.SeqLen
		return max(1, (o.GlobalBatchTokens+per-1)/per)
	case o.GlobalBatch > 0:
		return o.GlobalBatch / o.MicroBatch
	}
	return 1
}

// identity is what must be the same for a checkpoint to continue a run:
// everything that changes the computation. Output, resume, device and the
// cadence of evaluation and saving may differ. The files the options name
// besides the model and the data (the model's signature and the data's
// hashes are compared apart) count by content, not by path: the initial
// adapter's two files, the replay data and the Fisher, as SHA-256. update
// and continual pass registry versions and earlier rounds at the same
// paths each time, with other contents.
func (o *TrainOptions) identity() (map[string]any, error) {
	c := *o
	c.Output, c.Resume, c.Device, c.Quiet, c.ProgressSecs = "", "", "", false, 0
	c.EvalEvery, c.EvalBatches, c.SaveEvery, c.Keep, c.Patience = 0, 0, 0, 0, 0
	c.Model = ""
	c.Data, c.EvalData = nil, nil
	c.InitAdapter, c.ReplayData, c.EWCFisher = "", nil, ""
	data, _ := json.Marshal(c)
	var m map[string]any
	_ = json.Unmarshal(data, &m)
	// As []any, the type a checkpoint's options have once read back.
	hash := func(flag string, paths ...string) ([]any, error) {
		sums, err := fileSums(paths)
		if err != nil {
			return nil, fmt.Errorf("train: %s: %w", flag, err)
		}
		out := make([]any, len(sums))
		for i, s := range sums {
			out[i] = s
		}
		return out, nil
	}
	var err error
	if o.InitAdapter != "" {
		if m["init_adapter"], err = hash("--init-adapter", adapterFiles(o.InitAdapter)...); err != nil {
			return nil, err
		}
	}
	if len(o.ReplayData) > 0 {
		if m["replay_data"], err = hash("--replay-data", o.ReplayData...); err != nil {
			return nil, err
		}
	}
	if o.EWCFisher != "" {
		if m["ewc_fisher"], err = hash("--ewc-fisher", o.EWCFisher); err != nil {
			return nil, err
		}
	}
	return m, nil
}
