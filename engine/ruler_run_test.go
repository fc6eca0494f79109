package engine

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/compassml/compass/internal/tinymodel"
	"github.com/compassml/compass/model"
)

// longTinyConfig is tinymodel's llama with 128k positions.
var longTinyConfig = strings.Replace(tinymodel.Config, `"max_position_embeddings":256`, `"max_position_embeddings":131072`, 1)

func TestRunRuler(t *testing.T) {
	if !strings.Contains(longTinyConfig, "131072") {
		t.Fatal("tinymodel.Config no longer sets max_position_embeddings 256")
	}
	dir := writeTinyByteModel(t, longTinyConfig, 5)
	m, err := model.Load(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok := loadTok(t, dir)
	text := readFixture(t, "udhr-sw.txt")
	for _, opts := range []RulerOptions{
		{Task: "niah", Variant: NIAHMultiquery, Length: 1500, Depth: 50, Lang: "sw", Samples: 2},
		{Task: "cwe", Variant: CWEEasy, Length: 3000, Lang: "sw"},
	} {
		res, acc, err := RunRuler(m, tok, text, opts, []int{tinymodel.EOS})
		if err != nil {
			t.Fatalf("%s: %v", opts.Task, err)
		}
		if len(res) != max(opts.Samples, 1) {
			t.Fatalf("%s: %d results", opts.Task, len(res))
		}
		correct := 0
		for _, r := range res {
			if r.FinishReason != "length" && r.FinishReason != "stop" {
				t.Errorf("finish reason %q", r.FinishReason)
			}
			if r.Correct != ScoreRuler(&r.RulerItem, r.Output) {
				t.Error("Correct is not the score of Output")
			}
			if r.Correct {
				correct++
			}
			want := map[string]int{"niah": niahMaxTokens, "cwe": cweMaxTokens}[opts.Task]
			if r.MaxTokens != want || r.FinishReason == "length" && r.OutputTokens != want {
				t.Errorf("%s: %d tokens generated of %d; want OneRuler's %d", opts.Task, r.OutputTokens, r.MaxTokens, want)
			}
		}
		if acc != float64(correct)/float64(len(res)) {
			t.Errorf("accuracy %v, want %d/%d", acc, correct, len(res))
		}
	}
	// Longer than the model takes.
	if _, _, err := RunRuler(m, tok, text, RulerOptions{Task: "niah", Variant: NIAHSingle, Length: 200000, Lang: "sw"}, nil); err == nil ||
		!strings.Contains(err.Error(), "max_position_embeddings") {
		t.Errorf("length over the model's: %v", err)
	}
}

func TestRulerEvalTasks(t *testing.T) {
	tok := rulerTokenizer(t, "tokenizer-llama3_1")
	data := filepath.Join("..", "testdata", "ruler", "udhr-sw.txt")
	niah, err := LookupEvalTask("niah")
	if err != nil {
		t.Fatal(err)
	}
	items, skips, err := niah.Build(EvalSource{Data: data, Lang: "sw", Tokenizer: tok, MaxLength: 131072, Seed: 1,
		Params: map[string]string{"variant": "multivalue", "length": "2048,4096", "depth": "0,100", "samples": "3"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 12 || skips.Total() != 0 {
		t.Fatalf("%d items, %d skipped; want 2 lengths x 2 depths x 3", len(items), skips.Total())
	}
	subjects := map[string]int{}
	for _, it := range items {
		subjects[it.Subject]++
		if !niah.Generative || it.Prompt == "" || it.MaxTokens < niahMaxTokens || it.Judge == nil {
			t.Fatalf("item %s: not a generative request", it.ID)
		}
		// The right answer, in another order, passes; a wrong one does not.
		nums := strings.Split(it.Target, ", ")
		if _, ok := it.Judge("<Answer> " + strings.Join(append(nums[1:], nums[0]), " ") + " </Answer>"); !ok {
			t.Errorf("%s: the gold %s judged wrong", it.ID, it.Target)
		}
		if _, ok := it.Judge(nums[0]); ok {
			t.Errorf("%s: one of four values judged right", it.ID)
		}
	}
	if subjects["niah_multivalue/4096/depth100"] != 3 || len(subjects) != 4 {
		t.Errorf("subjects %v", subjects)
	}
	cwe, err := LookupEvalTask("cwe")
	if err != nil {
		t.Fatal(err)
	}
	words := filepath.Join(t.TempDir(), "words.txt")
	if err := os.WriteFile(words, []byte(cweText(3000)), 0o644); err != nil {
		t.Fatal(err)
	}
	items, _, err = cwe.Build(EvalSource{Data: data, Lang: "en", Tokenizer: tok, MaxLength: 8192, Limit: 2,
		Params: map[string]string{"variant": "hard", "words": words}})
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 2 || items[0].Subject != "cwe/8192" {
		t.Fatalf("%d items, subject %q; want 2 of cwe/8192 (the model's length, --limit 2)", len(items), items[0].Subject)
	}
	if _, ok := items[0].Judge(strings.ToUpper(items[0].Target)); !ok {
		t.Error("the ten words judged wrong")
	}
	for _, bad := range []map[string]string{
		{"colour": "red"}, {"length": "200000"}, {"length": "abc"}, {"samples": "0"}, {"variant": "triple"},
	} {
		if _, _, err := niah.Build(EvalSource{Data: data, Lang: "sw", Tokenizer: tok, MaxLength: 131072, Params: bad}); err == nil {
			t.Errorf("params %v: no error", bad)
		}
	}
	// A key no task given takes is refused before any model is read; one
	// that another task takes is left to it.
	for _, c := range []struct {
		tasks  []string
		params map[string]string
		want   string
	}{
		{[]string{"cwe"}, map[string]string{"depth": "5"}, "--task-param depth: none of the tasks (cwe) takes it"},
		{[]string{"global-mmlu"}, map[string]string{"length": "4096"}, "--task-param length: none of the tasks (global-mmlu) takes it"},
		{[]string{"niah", "cwe"}, map[string]string{"depth": "5"}, "no such file"},
	} {
		_, err := Eval(context.Background(), EvalOptions{ModelDir: filepath.Join(t.TempDir(), "none"), Tasks: c.tasks, Langs: []string{"sw"}, Params: c.params})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("tasks %v, params %v: error %v; want one saying %q", c.tasks, c.params, err, c.want)
		}
	}
	if _, _, err := cwe.Build(EvalSource{Data: data, Lang: "en", Tokenizer: tok, MaxLength: 8192, Limit: 1,
		Params: map[string]string{"depth": "5", "words": words}}); err != nil {
		t.Errorf("cwe beside niah's depth: %v", err)
	}
}

// The peak memory of a niah run on the CPU grows linearly with the length:
// each length runs in a child process (this test binary), which reports its
// peak resident memory (VmHWM). Lengths from COMPASS_RULER_MEM_LENGTHS
// (default 2048,8192); e.g. 8192,32768 for the README's numbers.
func TestRulerMemoryLinear(t *testing.T) {
	if testing.Short() {
		t.Skip("runs long prompts through a model")
	}
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/self/status")
	}
	lengths := []int{2048, 8192}
	if s := os.Getenv("COMPASS_RULER_MEM_LENGTHS"); s != "" {
		var err error
		if lengths, err = parseList(s, strconv.Atoi); err != nil || len(lengths) != 2 {
			t.Fatalf("COMPASS_RULER_MEM_LENGTHS=%q: want two lengths", s)
		}
	}
	peak := make([]float64, len(lengths))
	for i, n := range lengths {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRulerMemoryChild$", "-test.v")
		cmd.Env = append(os.Environ(), fmt.Sprintf("COMPASS_RULER_MEM_CHILD=%d", n))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child at %d tokens: %v\n%s", n, err, out)
		}
		found := false
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 6 && f[0] == "ruler-mem" {
				peak[i], _ = strconv.ParseFloat(f[3], 64)
				t.Logf("niah_single at %s tokens (%s prompt): peak RSS %s MiB, Go runtime Sys %s MiB", f[1], f[2], f[3], f[5])
				found = true
			}
		}
		if !found {
			t.Fatalf("child at %d tokens reported nothing:\n%s", n, out)
		}
	}
	// Linear: the extra memory per extra token stays small (about 6 KiB
	// measured). A [T x T] float32 buffer of one head would add 4*T bytes
	// per token on average between the lengths: 40 KiB from 2k to 8k.
	perToken := (peak[1] - peak[0]) * (1 << 20) / float64(lengths[1]-lengths[0])
	t.Logf("%.0f bytes per token between %d and %d tokens", perToken, lengths[0], lengths[1])
	const limit = 16 << 10
	if perToken > limit {
		t.Errorf("peak memory grows by %.0f bytes per token, more than %d: not linear", perToken, limit)
	}
}

// TestRulerMemoryChild is the child process of TestRulerMemoryLinear.
func TestRulerMemoryChild(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv("COMPASS_RULER_MEM_CHILD"))
	if err != nil {
		t.Skip("run by TestRulerMemoryLinear")
	}
	dir := writeTinyByteModel(t, longTinyConfig, 5)
	m, err := model.Load(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok := loadTok(t, dir)
	res, _, err := RunRuler(m, tok, readFixture(t, "udhr-sw.txt"),
		RulerOptions{Task: "niah", Variant: NIAHSingle, Length: n, Depth: 50, Lang: "sw"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	hwm := 0.0
	for line := range strings.Lines(string(status)) {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			hwm = kb / 1024
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("ruler-mem %d %d %.1f MiB %.1f\n", n, res[0].Tokens, hwm, float64(ms.Sys)/(1<<20))
}

// A long-context task's report has a row per (variant, length, depth),
// as the README says; MMLU's subjects stay in results.json.
func TestRulerReportRows(t *testing.T) {
	metrics := func(groups ...string) []EvalMetric {
		var ms []EvalMetric
		for _, g := range groups {
			ms = append(ms, EvalMetric{System: "base", Group: g, N: 3, Acc: 2.0 / 3})
		}
		return ms
	}
	res := &EvalResults{Model: "m", Systems: []string{"base"}, Langs: []string{"sw"}, Tasks: []*EvalTaskResult{
		{Task: "niah", Generative: true, Metrics: metrics("all", "lang:sw", "subject:niah_single/2048/depth0", "subject:niah_single/4096/depth100")},
		{Task: "global-mmlu", Metrics: metrics("all", "lang:sw", "subject:anatomy")},
	}}
	md := EvalReport(res, nil)
	for _, want := range []string{"| niah_single/2048/depth0 | 3 | 66.7", "| niah_single/4096/depth100 | 3 | 66.7"} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks the row %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "anatomy") {
		t.Errorf("the report lists MMLU's subjects:\n%s", md)
	}
}
