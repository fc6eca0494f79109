package tokenizer

import (
	"testing"
)

// benchCorpusBytes is the size the benchmark corpus is grown to: the lines
// of testdata/tokenizers/corpus.jsonl, repeated in order until their text
// reaches it. tools/tokref/bench.js builds the same corpus for HF tokenizers.
const benchCorpusBytes = 2 << 20

func benchCorpus(b *testing.B) (lines []string, size int) {
	corpus := readCorpus(b)
	for size < benchCorpusBytes {
		for _, l := range corpus {
			lines = append(lines, l.Text)
			size += len(l.Text)
		}
	}
	return lines, size
}

// BenchmarkEncode encodes the corpus one line at a time on one goroutine;
// run it with -cpu 1 for the single-thread number.
func BenchmarkEncode(b *testing.B) {
	for _, name := range []string{"llama3_1", "qwen3", "gpt4o"} {
		b.Run(name, func(b *testing.B) {
			tok := fixture(b, name)
			lines, size := benchCorpus(b)
			b.SetBytes(int64(size))
			tokens := 0
			for b.Loop() {
				tokens = 0
				for _, l := range lines {
					ids, err := tok.Encode(l, false)
					if err != nil {
						b.Fatal(err)
					}
					tokens += len(ids)
				}
			}
			b.ReportMetric(float64(tokens)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

// BenchmarkEncodeBatch encodes the corpus with EncodeBatch, on all CPUs.
func BenchmarkEncodeBatch(b *testing.B) {
	for _, name := range []string{"llama3_1", "qwen3", "gpt4o"} {
		b.Run(name, func(b *testing.B) {
			tok := fixture(b, name)
			lines, size := benchCorpus(b)
			b.SetBytes(int64(size))
			tokens := 0
			for b.Loop() {
				out, err := tok.EncodeBatch(lines, false)
				if err != nil {
					b.Fatal(err)
				}
				tokens = 0
				for _, ids := range out {
					tokens += len(ids)
				}
			}
			b.ReportMetric(float64(tokens)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}
