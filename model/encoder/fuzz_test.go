package encoder

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// fuzzGuard fails an input that allocates more than 256 MiB, and kills
// the process (the fuzzer then keeps the input) when one runs for more
// than 10 seconds.
func fuzzGuard(t *testing.T) func() {
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	timer := time.AfterFunc(10*time.Second, func() { panic("fuzz: an input took more than 10s") })
	return func() {
		timer.Stop()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; n > 256<<20 {
			t.Fatalf("an input allocated %d MiB", n>>20)
		}
	}
}

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
		defer fuzzGuard(t)()
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
