package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/compassml/compass/model"
	"github.com/urfave/cli/v3"
)

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "describe a checkpoint: architecture, shapes, parameters, dtype, size, LoRA training memory",
		ArgsUsage: "DIR | config.json",
		Description: "DIR is a Hugging Face checkpoint directory (config.json with model.safetensors or\n" +
			"model.safetensors.index.json and its shards); a bare config.json works too. The stored\n" +
			"tensors are checked against the ones the config implies. The memory estimate is for one\n" +
			"LoRA training step on the GPU; see the README for its formula.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "seq-len", Value: 2048, Usage: "tokens per sequence for the memory estimate"},
			&cli.IntFlag{Name: "batch", Value: 1, Usage: "sequences per step for the memory estimate"},
			&cli.IntFlag{Name: "rank", Value: 16, Usage: "LoRA rank for the memory estimate"},
			&cli.StringSliceFlag{Name: "targets", Usage: "adapted projections (q,k,v,o,gate,up,down; default all)"},
			&cli.BoolFlag{Name: "recompute", Usage: "estimate with per-layer activation recomputation"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON instead of text"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() != 1 {
				return fmt.Errorf("inspect: want one checkpoint directory or config.json, got %d arguments", cmd.NArg())
			}
			in, err := model.Inspect(cmd.Args().First())
			if err != nil {
				return err
			}
			mem, err := model.EstimateLoRAMemory(in.Config, model.MemoryOptions{
				SeqLen: cmd.Int("seq-len"), Batch: cmd.Int("batch"), Rank: cmd.Int("rank"),
				Targets: cmd.StringSlice("targets"), Recompute: cmd.Bool("recompute"),
			})
			if err != nil {
				return fmt.Errorf("inspect: memory estimate: %w", err)
			}
			if maxPos := in.Config.MaxPositionEmbeddings; maxPos > 0 && cmd.Int("seq-len") > maxPos {
				fmt.Fprintf(cmd.Root().ErrWriter, "inspect: --seq-len %d is beyond the model's %d positions (max_position_embeddings): compass train refuses it\n",
					cmd.Int("seq-len"), maxPos)
			}
			w := cmd.Root().Writer
			if cmd.Bool("json") {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				if err := enc.Encode(struct {
					*model.Inspection
					Memory model.MemoryEstimate `json:"lora_training_memory"`
				}{in, mem}); err != nil {
					return err
				}
			} else {
				printInspection(w, in)
				printMemory(w, cmd, mem)
			}
			// A checkpoint that would not load fails the command, after the
			// report that says why (tensors present beyond the config's, such
			// as rotary_emb.inv_freq, are listed; loading ignores them).
			if len(in.Missing)+len(in.Mismatched) > 0 {
				return fmt.Errorf("inspect: the checkpoint does not match its config: %d tensors missing, %d mis-shaped", len(in.Missing), len(in.Mismatched))
			}
			return nil
		},
	}
}

func printInspection(w io.Writer, in *model.Inspection) {
	c := in.Config
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "path\t%s\n", in.Path)
	fmt.Fprintf(tw, "architecture\t%s (%s)\n", c.Architecture, c.Family)
	fmt.Fprintf(tw, "layers\t%d, hidden %d, intermediate %d\n", c.NumHiddenLayers, c.HiddenSize, c.IntermediateSize)
	fmt.Fprintf(tw, "attention\t%d heads, %d kv heads (%d queries per kv head), head_dim %d, %s\n",
		c.NumAttentionHeads, c.NumKeyValueHeads, c.NumAttentionHeads/c.NumKeyValueHeads, c.HeadDim, biasText(c))
	fmt.Fprintf(tw, "rope\t%s\n", ropeText(c))
	fmt.Fprintf(tw, "rms_norm_eps\t%g\n", c.RMSNormEps)
	tied := "untied lm_head"
	if c.TieWordEmbeddings {
		tied = "lm_head tied to the embeddings"
	}
	fmt.Fprintf(tw, "vocabulary\t%d, %s\n", c.VocabSize, tied)
	fmt.Fprintf(tw, "parameters\t%s (%.2f B)\n", commas(in.Parameters), float64(in.Parameters)/1e9)
	fmt.Fprintf(tw, "dtype\t%s (config)\n", c.TorchDtype)
	if in.HasWeights {
		var parts []string
		for dt, n := range in.StoredByDT {
			parts = append(parts, fmt.Sprintf("%s %s", dt, commas(n)))
		}
		fmt.Fprintf(tw, "stored\t%s elements in %d file(s)\n", strings.Join(parts, ", "), len(in.Files))
		fmt.Fprintf(tw, "on disk\t%s (%s bytes)\n", humanBytes(in.BytesOnDisk), commas(in.BytesOnDisk))
	} else {
		fmt.Fprintf(tw, "on disk\tno safetensors (config only)\n")
	}
	tw.Flush()

	fmt.Fprintf(w, "\ntensors ([out, in]; layer tensors once for all %d layers):\n", c.NumHiddenLayers)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range c.Tensors() {
		name, ok := strings.CutPrefix(t.Name, "model.layers.0.")
		switch {
		case ok:
			name = "model.layers.{i}." + name
		case strings.HasPrefix(t.Name, "model.layers."):
			continue
		}
		fmt.Fprintf(tw, "  %s\t%v\n", name, t.Shape)
	}
	tw.Flush()

	if len(in.Missing)+len(in.Unexpected)+len(in.Mismatched) > 0 {
		fmt.Fprintf(w, "\ncheckpoint does not match its config:\n")
		for _, s := range in.Missing {
			fmt.Fprintf(w, "  missing     %s\n", s)
		}
		for _, s := range in.Mismatched {
			fmt.Fprintf(w, "  mis-shaped  %s\n", s)
		}
		for _, s := range in.Unexpected {
			fmt.Fprintf(w, "  unexpected  %s\n", s)
		}
	} else if in.HasWeights {
		fmt.Fprintf(w, "\nevery tensor the config implies is present with its shape\n")
	}
}

func printMemory(w io.Writer, cmd *cli.Command, m model.MemoryEstimate) {
	mode := "all activations kept"
	if cmd.Bool("recompute") {
		mode = "per-layer recomputation"
	}
	fmt.Fprintf(w, "\nGPU memory of one LoRA training step (estimate): seq %d x batch %d, rank %d, %s\n",
		cmd.Int("seq-len"), cmd.Int("batch"), cmd.Int("rank"), mode)
	fmt.Fprintf(w, "adapted modules per layer: %s; %s trainable parameters\n", strings.Join(m.Targets, ", "), commas(m.LoRAParameters))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, r := range []struct {
		name string
		n    int64
	}{
		{"base weights", m.Weights}, {"LoRA parameters (f32)", m.LoRAParams}, {"LoRA gradients (f32)", m.LoRAGrads},
		{"AdamW state (f32)", m.Optimizer}, {"activations", m.Activations}, {"loss chunk", m.Logits},
		{"CUDA context + workspace", m.Workspace}, {"total", m.Total},
	} {
		fmt.Fprintf(tw, "  %s\t%s\t\n", r.name, humanBytes(r.n))
	}
	tw.Flush()
}

func biasText(c *model.Config) string {
	switch {
	case c.QKVBias && c.OutputBias:
		return "q/k/v/o biases"
	case c.QKVBias:
		return "q/k/v biases"
	}
	return "no biases"
}

func ropeText(c *model.Config) string {
	r := c.RopeScaling
	s := fmt.Sprintf("%s, theta %g, %d of %d dims rotate", r.Type, c.RopeTheta, c.RotaryDims(), c.HeadDim)
	switch r.Type {
	case model.RopeLlama3:
		s += fmt.Sprintf(", factor %g, low %g, high %g, original %d", r.Factor, r.LowFreqFactor, r.HighFreqFactor, r.OriginalMaxPositionEmbeddings)
	case model.RopeLongRope:
		s += fmt.Sprintf(", original %d, max %d, attention factor %.4f", c.OriginalMaxPositionEmbeddings, c.MaxPositionEmbeddings, c.RopeAttentionFactor())
	}
	return s
}

// commas writes n with thousands separators: 8,030,261,248.
func commas(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
