package tokenizer

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/compassml/compass/internal/fuzzguard"
)

// byteLevelVocab is the 256 byte-level tokens, ids 0 to 255, as JSON
// members.
func byteLevelVocab() string {
	var b []byte
	for i, r := range byteChars {
		if i > 0 {
			b = append(b, ',')
		}
		k, _ := json.Marshal(string(r))
		b = append(b, k...)
		b = append(b, ':')
		b = append(b, []byte(json.Number(itoa(i)))...)
	}
	return string(b)
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// Small tokenizer.json files of each model type, for seeds.
func smallTokenizers() []string {
	bl := byteLevelVocab()
	return []string{
		// Byte-level BPE with a merge, NFC, a Split step, an added token
		// and a template post-processor.
		`{"added_tokens":[{"id":259,"content":"<s>","special":true,"normalized":false}],` +
			`"normalizer":{"type":"NFC"},` +
			`"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"\\p{L}+|\\s+"},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"use_regex":false}]},` +
			`"model":{"type":"BPE","vocab":{` + bl + `,"ab":256,"Ġa":257,"Ġab":258},"merges":["a b",["Ġ","a"],"Ġa b"]},` +
			`"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>"}},{"Sequence":{"id":"A"}}],"special_tokens":{"<s>":{"ids":[259]}}},` +
			`"decoder":{"type":"ByteLevel"}}`,
		// Unigram with byte fallback and Metaspace.
		`{"added_tokens":[{"id":0,"content":"<unk>","special":true}],` +
			`"normalizer":{"type":"Sequence","normalizers":[{"type":"Strip","strip_left":false,"strip_right":true},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]},` +
			`"pre_tokenizer":{"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":true},` +
			`"model":{"type":"Unigram","unk_id":0,"byte_fallback":true,"vocab":[["<unk>",0],["▁",-1.5],["a",-2],["b",-2.5],["▁ab",-1],["<0x41>",-9]]},` +
			`"post_processor":{"type":"RobertaProcessing","sep":["</s>",2],"cls":["<unk>",0]},` +
			`"decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]}}`,
		// WordPiece, BERT style.
		`{"added_tokens":[{"id":0,"content":"[UNK]","special":true},{"id":1,"content":"[CLS]","special":true},{"id":2,"content":"[SEP]","special":true}],` +
			`"normalizer":{"type":"BertNormalizer","clean_text":true,"handle_chinese_chars":true,"strip_accents":null,"lowercase":true},` +
			`"pre_tokenizer":{"type":"BertPreTokenizer"},` +
			`"model":{"type":"WordPiece","unk_token":"[UNK]","continuing_subword_prefix":"##","max_input_chars_per_word":100,"vocab":{"[UNK]":0,"[CLS]":1,"[SEP]":2,"hello":3,"##lo":4,"hel":5,",":6}},` +
			`"post_processor":{"type":"BertProcessing","sep":["[SEP]",2],"cls":["[CLS]",1]},` +
			`"decoder":{"type":"WordPiece","prefix":"##","cleanup":true}}`,
	}
}

// FuzzLoad loads a tokenizer.json of any content. Load must refuse it
// with an error, or give a tokenizer that encodes and decodes a few texts
// without panicking, and that decodes every id below its vocabulary size
// or refuses it.
func FuzzLoad(f *testing.F) {
	for _, s := range smallTokenizers() {
		f.Add([]byte(s))
	}
	for _, path := range []string{
		filepath.Join("..", "..", "testdata", "tokenizers", "unigram", "udhr-bytes", "tokenizer.json"),
		filepath.Join("..", "..", "testdata", "demo", "model", "tokenizer.json"),
	} {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// Found by reading the code, not by the fuzzer (which in 3 minutes
	// never grew an id this far): one id of 2^30 made a 1 KB file
	// allocate a table of 2^30 entries, 16 GiB for WordPiece, 24 GiB
	// for BPE.
	small := smallTokenizers()
	f.Add([]byte(strings.Replace(small[2], `"hel":5`, `"hel":1073741824`, 1)))
	f.Add([]byte(strings.Replace(small[0], `"Ġab":258`, `"Ġab":1073741824`, 1)))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "tokenizer.json")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		defer fuzzguard.Start(t, 256<<20)()
		tok, err := Load(path)
		if err != nil {
			return
		}
		for _, text := range []string{"", "Hello, wörld! ab  a\n", "<s>ab</s>[CLS]", "日本語 e\u0301 🇫🇷"} {
			ids, err := tok.Encode(text, true)
			if err != nil {
				continue // unk-less Unigram models refuse unknown characters
			}
			for _, id := range ids {
				if id < 0 || id >= tok.VocabSize() {
					t.Fatalf("%q: id %d outside the vocabulary (size %d)", text, id, tok.VocabSize())
				}
			}
			if _, err := tok.Decode(ids, false); err != nil {
				t.Fatalf("%q: decode of its own ids %v: %v", text, ids, err)
			}
		}
		for id := range min(tok.VocabSize(), 1<<12) {
			tok.Decode([]int{id}, true)
		}
	})
}

// FuzzPrecompiled parses a SentencePiece precompiled_charsmap (a binary
// trie with offsets into a string blob) and normalizes text with it: the
// parser must refuse a bad map or give one that normalizes any text
// without reading outside itself.
func FuzzPrecompiled(f *testing.F) {
	var tj struct {
		Normalizer struct {
			Normalizers []struct {
				PrecompiledCharsmap string `json:"precompiled_charsmap"`
			} `json:"normalizers"`
		} `json:"normalizer"`
	}
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "tokenizers", "unigram", "udhr-bytes", "tokenizer.json"))
	if err != nil {
		f.Fatal(err)
	}
	if err := json.Unmarshal(b, &tj); err != nil {
		f.Fatal(err)
	}
	real, err := base64.StdEncoding.DecodeString(tj.Normalizer.Normalizers[0].PrecompiledCharsmap)
	if err != nil {
		f.Fatal(err)
	}
	// The real map is 230 KB: seed with its trie cut short, and small
	// hand-made ones.
	f.Add(real[:4+1024], "ｈｅｌｌｏ ℌ ﬁ x")
	f.Add([]byte{4, 0, 0, 0, 0, 0, 0, 0}, "abc")
	f.Add([]byte{8, 0, 0, 0, 0x00, 0x04, 0, 0, 0x61, 0x01, 0, 0, 'x', 0}, "a")
	f.Add([]byte{}, "")
	f.Fuzz(func(t *testing.T, raw []byte, text string) {
		defer fuzzguard.Start(t, 256<<20)()
		m, err := parsePrecompiled(base64.StdEncoding.EncodeToString(raw))
		if err != nil || !utf8.ValidString(text) {
			return
		}
		m.normalize(text, nil)
	})
}

// FuzzChatTemplate compiles a checkpoint's chat template (from
// tokenizer_config.json) and renders a conversation with it: a template
// that does not compile or render must be an error, never a panic.
func FuzzChatTemplate(f *testing.F) {
	for _, name := range []string{"llama-3.1", "qwen2.5", "phi-4-mini"} {
		b, err := builtinTemplates.ReadFile("templates/" + name + ".jinja")
		if err != nil {
			f.Fatal(err)
		}
		cfg, _ := json.Marshal(map[string]any{"bos_token": "<s>", "eos_token": map[string]string{"content": "</s>"}, "chat_template": string(b)})
		f.Add(cfg)
	}
	f.Add([]byte(`{"chat_template":[{"name":"default","template":"<|im_start|>{% for m in messages %}{{ m.content }}<|im_end|>{% endfor %}"}]}`))
	f.Add([]byte(`{"chat_template":"<|assistant|><|end|>{{ messages[0]['content'] | upper }}{% if add_generation_prompt %}<|assistant|>{% endif %}"}`))
	tok, err := Load(filepath.Join("..", "..", "testdata", "demo", "model", "tokenizer.json"))
	if err != nil {
		f.Fatal(err)
	}
	msgs := []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}, {Role: "assistant", Content: "Hello!"}}
	f.Fuzz(func(t *testing.T, cfg []byte) {
		defer fuzzguard.Start(t, 256<<20)()
		c, err := parseConfig(cfg)
		if err != nil {
			return
		}
		c.path = "tokenizer_config.json"
		tok.config = c
		chat, err := tok.Chat("")
		if err != nil {
			return
		}
		chat.Encode(msgs, true)
	})
}
