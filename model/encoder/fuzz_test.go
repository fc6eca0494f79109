package encoder

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/compassml/compass/internal/fuzzguard"
)

// FuzzParseConfig parses an encoder config.json of any content. A config
// that ParseConfig accepts must have its tensors listed and its
// parameters counted without a panic, an overflow or an absurd
// allocation.
func FuzzParseConfig(f *testing.F) {
	for _, name := range []string{"multilingual-e5-small.json", "multilingual-e5-base.json"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "configs", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"architectures":["BertModel"],"model_type":"bert","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":16,"vocab_size":10,"max_position_embeddings":16,"pad_token_id":0}`))
	// Found by reading the code, not by the fuzzer, which does not grow
	// numbers this far: ten million layers made Tensors list 160 million
	// tensors, and sizes of 4e9 overflowed NumParameters.
	f.Add([]byte(`{"architectures":["BertModel"],"model_type":"bert","hidden_size":8,"num_hidden_layers":10000000,"num_attention_heads":2,"intermediate_size":16,"vocab_size":10,"max_position_embeddings":16,"pad_token_id":0}`))
	f.Add([]byte(`{"architectures":["BertModel"],"model_type":"bert","hidden_size":4000000000,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":4000000000,"vocab_size":4000000000,"max_position_embeddings":4000000000,"pad_token_id":0}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		defer fuzzguard.Start(t, 256<<20)()
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		if c.HeadDim() <= 0 || c.MaxTokens() <= 0 {
			t.Fatalf("head dim %d, max tokens %d", c.HeadDim(), c.MaxTokens())
		}
		if n := c.NumParameters(); n <= 0 {
			t.Fatalf("%d parameters", n)
		}
	})
}
