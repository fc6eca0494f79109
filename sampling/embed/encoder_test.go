package embed

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compassml/compass/model/encoder"
	"github.com/compassml/compass/model/tokenizer"
	"github.com/compassml/compass/tensor"
)

// tinyEncoder is a random 2-layer XLM-R over the UDHR Unigram tokenizer of
// testdata (4,002 tokens, XLM-R's layout: <s> 0, <pad> 1, </s> 2), with
// positions for 64 tokens.
func tinyEncoder(t *testing.T, vocab int) (*encoder.Model, *tokenizer.Tokenizer) {
	t.Helper()
	tok, err := tokenizer.Load(filepath.Join("..", "..", "testdata", "tokenizers", "unigram", "udhr-xlmr", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`{"architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta", "hidden_size": 32,
		"num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": %d,
		"max_position_embeddings": 66, "type_vocab_size": 1, "layer_norm_eps": 1e-05, "pad_token_id": 1}`, vocab)
	dir := t.TempDir()
	if _, err := encoder.WriteRandomCheckpoint(dir, []byte(cfg), tensor.F32, 9, ""); err != nil {
		t.Fatal(err)
	}
	m, err := encoder.Load(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, tok
}

var encoderTexts = []string{
	"All human beings are born free and equal in dignity and rights.",
	"Tous les êtres humains naissent libres et égaux en dignité et en droits.",
	"Alle Menschen sind frei und gleich an Würde und Rechten geboren.",
	"a",
	"Todos los seres humanos nacen libres e iguales en dignidad y derechos y, dotados como están de razón y conciencia, deben comportarse fraternalmente los unos con los otros, todos los seres humanos nacen libres.",
}

func TestEncoderEmbedder(t *testing.T) {
	m, tok := tinyEncoder(t, 4002)
	e, err := NewEncoderEmbedder(m, tok, "tiny", EncoderOptions{Prefix: E5Passage, BatchTokens: 200})
	if err != nil {
		t.Fatal(err)
	}
	if e.Dim() != 32 {
		t.Errorf("Dim %d, want 32", e.Dim())
	}
	vecs, err := e.Embed(encoderTexts)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vecs {
		norm := 0.0
		for _, x := range v {
			norm += float64(x) * float64(x)
		}
		if math.Abs(math.Sqrt(norm)-1) > 1e-6 {
			t.Errorf("text %d: norm %v, want 1", i, math.Sqrt(norm))
		}
		// Alone, the text gets no padding: the same vector.
		alone, err := e.Embed(encoderTexts[i : i+1])
		if err != nil {
			t.Fatal(err)
		}
		for j := range v {
			if d := math.Abs(float64(v[j] - alone[0][j])); d > 1e-6 {
				t.Fatalf("text %d: element %d is %v in a batch, %v alone", i, j, v[j], alone[0][j])
			}
		}
	}

	// The long text is truncated to the 64 tokens the positions cover,
	// keeping </s>; the prefix comes first.
	ids, err := e.Encode(encoderTexts[4])
	if err != nil {
		t.Fatal(err)
	}
	full, _ := tok.Encode(E5Passage+encoderTexts[4], true)
	if len(full) <= 64 || len(ids) != 64 || ids[63] != 2 || ids[0] != 0 {
		t.Errorf("truncation: %d tokens (of %d) from %v ... %v, want 64 from <s> (0) to </s> (2)", len(ids), len(full), ids[:2], ids[len(ids)-2:])
	}
	for i := 0; i < 63; i++ {
		if ids[i] != full[i] {
			t.Fatalf("truncation: token %d is %d, want %d", i, ids[i], full[i])
		}
	}

	// What changes the vectors changes the name (and so the cache).
	names := map[string]bool{e.Name(): true}
	for _, o := range []EncoderOptions{
		{Prefix: E5Query}, {Prefix: E5Passage, Pooling: encoder.PoolCLS}, {Prefix: E5Passage, MaxLen: 32},
		{Prefix: E5Passage, Unnormalized: true},
	} {
		other, err := NewEncoderEmbedder(m, tok, "tiny", o)
		if err != nil {
			t.Fatal(err)
		}
		if names[other.Name()] {
			t.Errorf("options %+v: name %q is not new", o, other.Name())
		}
		names[other.Name()] = true
		v, err := other.Embed(encoderTexts[:1])
		if err != nil {
			t.Fatal(err)
		}
		same := true
		for j := range v[0] {
			same = same && v[0][j] == vecs[0][j]
		}
		if same {
			t.Errorf("options %+v: the same vector as the default's", o)
		}
	}
	if !strings.Contains(e.Name(), "tiny") {
		t.Errorf("name %q does not name the source", e.Name())
	}
}

func TestEncoderEmbedderErrors(t *testing.T) {
	m, tok := tinyEncoder(t, 3000) // fewer rows than the tokenizer's ids
	if _, err := NewEncoderEmbedder(m, tok, "tiny", EncoderOptions{}); err == nil || !strings.Contains(err.Error(), "vocab_size 3000") {
		t.Errorf("tokenizer larger than the vocabulary: %v", err)
	}
	m, tok = tinyEncoder(t, 4002)
	for _, o := range []EncoderOptions{{MaxLen: 65}, {MaxLen: -1}, {Pooling: "max"}, {MaxLen: 1}} {
		if _, err := NewEncoderEmbedder(m, tok, "tiny", o); err == nil {
			t.Errorf("options %+v: no error", o)
		}
	}
}
