// Package tinymodel writes small checkpoints for tests and benchmarks: a
// random decoder (model.WriteRandomCheckpoint's weights) with a real
// byte-level tokenizer.json and tokenizer_config.json, so that commands
// read text with it exactly as they do with a published checkpoint.
package tinymodel

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Token ids of the byte-level vocabulary: the 256 bytes are ids 0..255,
// then the special tokens.
const (
	EOS       = 256
	BOS       = 257
	VocabSize = 260 // the model's vocabulary (two ids unused, as real checkpoints have padding rows)
)

// Config is a two-layer llama-family config.json over the byte vocabulary,
// float32, GQA 2.
const Config = `{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":32,"intermediate_size":64,
	"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":260,"max_position_embeddings":256,
	"eos_token_id":256,"bos_token_id":257,"torch_dtype":"float32","rope_theta":10000}`

// byteLevelAlphabet is GPT-2's bytes_to_unicode: the character that stands
// for byte b in a byte-level BPE vocabulary.
func byteLevelAlphabet() []rune {
	out := make([]rune, 256)
	printable := func(b int) bool {
		return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
	}
	n := 0
	for b := range 256 {
		if printable(b) {
			out[b] = rune(b)
		} else {
			out[b] = rune(256 + n)
			n++
		}
	}
	return out
}

// WriteTokenizer writes tokenizer.json (byte-level BPE without merges: one
// token per byte; <|eos|> = 256 and <|bos|> = 257 special) and
// tokenizer_config.json (their names; no chat template) into dir.
func WriteTokenizer(dir string) error {
	vocab := map[string]int{}
	for b, r := range byteLevelAlphabet() {
		vocab[string(r)] = b
	}
	special := func(id int, content string) map[string]any {
		return map[string]any{"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
			"normalized": false, "special": true}
	}
	tok := map[string]any{
		"version":        "1.0",
		"added_tokens":   []map[string]any{special(EOS, "<|eos|>"), special(BOS, "<|bos|>")},
		"normalizer":     nil,
		"pre_tokenizer":  map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
		"post_processor": nil,
		"decoder":        map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
		"model": map[string]any{"type": "BPE", "dropout": nil, "unk_token": nil, "continuing_subword_prefix": nil,
			"end_of_word_suffix": nil, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
			"vocab": vocab, "merges": []string{}},
	}
	if err := writeJSON(filepath.Join(dir, "tokenizer.json"), tok); err != nil {
		return err
	}
	return writeJSON(filepath.Join(dir, "tokenizer_config.json"), map[string]any{"eos_token": "<|eos|>", "bos_token": "<|bos|>"})
}

func writeJSON(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("tinymodel: %w", err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("tinymodel: %w", err)
	}
	return nil
}

// Sentences is a small multilingual text (from the Universal Declaration
// of Human Rights), lines of different lengths, a few longer than 64 bytes.
var Sentences = []string{
	"All human beings are born free and equal in dignity and rights.",
	"Tous les êtres humains naissent libres et égaux en dignité et en droits.",
	"Alle Menschen sind frei und gleich an Würde und Rechten geboren.",
	"Todos los seres humanos nacen libres e iguales en dignidad y derechos.",
	"Kila mtu amezaliwa huru, hadhi na haki zake ni sawa.",
	"Wszyscy ludzie rodzą się wolni i równi pod względem swej godności i swych praw.",
	"Hi.",
	"Ok",
	"Everyone has the right to life, liberty and security of person.",
	"No one shall be held in slavery or servitude; slavery and the slave trade shall be prohibited in all their forms.",
	"Jeder hat das Recht auf Leben, Freiheit und Sicherheit der Person.",
	"Nadie será sometido a torturas ni a penas o tratos crueles, inhumanos o degradantes.",
	"Everyone has the right to recognition everywhere as a person before the law.",
	"Toute personne a droit à la liberté de pensée, de conscience et de religion.",
	"abc abc abc abc",
	"Ni marufuku kumfanya mtu yeyote kuwa mtumwa.",
}

// WriteTextData writes the sentences n times over, each line numbered
// (sentence i of round k ends with " (i+k) mod 7"), as a JSONL file of the
// text schema, and returns its path.
func WriteTextData(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("tinymodel: %w", err)
	}
	enc := json.NewEncoder(f)
	enc.SetEscapeHTML(false)
	for k := range n {
		for i, s := range Sentences {
			if err := enc.Encode(map[string]string{"text": fmt.Sprintf("%s %d", s, (k*len(Sentences)+i)%7)}); err != nil {
				f.Close()
				return fmt.Errorf("tinymodel: %w", err)
			}
		}
	}
	return f.Close()
}
