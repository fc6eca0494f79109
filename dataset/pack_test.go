package dataset

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// uniqueExamples makes n examples of random lengths in [1, maxLen] whose
// tokens all have distinct ids (from 1), so that a label names the one token
// it is. Like instruction data, each has a prompt without loss and a target
// part with loss; some have no target at all.
func uniqueExamples(rng *rand.Rand, n, maxLen int) []Example {
	next := int32(1)
	out := make([]Example, n)
	for i := range out {
		l := 1 + rng.IntN(maxLen)
		prompt := rng.IntN(l + 1) // tokens [prompt, l) are targets
		e := Example{IDs: make([]int32, l), Loss: make([]bool, l), Source: fmt.Sprintf("f.jsonl:%d", i+1)}
		for j := range l {
			e.IDs[j] = next
			next++
			e.Loss[j] = j >= prompt
		}
		out[i] = e
	}
	return out
}

// targetIDs returns the ids of the targets of examples: the tokens after
// the first with Loss set.
func targetIDs(examples []Example) map[int32]bool {
	want := map[int32]bool{}
	for _, e := range examples {
		for j := 1; j < len(e.IDs); j++ {
			if e.Loss[j] {
				want[e.IDs[j]] = true
			}
		}
	}
	return want
}

// checkRows checks the layout of rows and returns their documents, padding
// left out, and how often each id appears as a label.
func checkRows(t *testing.T, rows []Row, seqLen int, padID int32) (docs [][]int32, labels map[int32]int) {
	t.Helper()
	labels = map[int32]int{}
	for r, row := range rows {
		if len(row.IDs) != seqLen || len(row.Labels) != seqLen {
			t.Fatalf("row %d: %d ids, %d labels, want %d", r, len(row.IDs), len(row.Labels), seqLen)
		}
		sum := 0
		for _, n := range row.DocLens {
			if n <= 0 {
				t.Fatalf("row %d: document lengths %v", r, row.DocLens)
			}
			sum += n
		}
		if sum != seqLen {
			t.Fatalf("row %d: document lengths %v sum to %d, want %d", r, row.DocLens, sum, seqLen)
		}
		if row.Tokens < 1 || row.Tokens > seqLen {
			t.Fatalf("row %d: %d real tokens", r, row.Tokens)
		}
		off := 0
		for _, n := range row.DocLens {
			if off >= row.Tokens {
				// The padding: one document, the last.
				if off+n != seqLen {
					t.Fatalf("row %d: padding %d at %d is not the tail", r, n, off)
				}
				for i := off; i < seqLen; i++ {
					if row.IDs[i] != padID || row.Labels[i] != IgnoreLabel {
						t.Fatalf("row %d: padding position %d has id %d label %d", r, i, row.IDs[i], row.Labels[i])
					}
				}
				break
			}
			doc := row.IDs[off : off+n]
			for i := range n {
				l := row.Labels[off+i]
				switch {
				case l == IgnoreLabel:
				case i == n-1:
					t.Fatalf("row %d: the last token of a document (at %d) has label %d: labels cross a document boundary", r, off+i, l)
				case l != doc[i+1]:
					t.Fatalf("row %d: label %d at %d is not the next token %d", r, l, off+i, doc[i+1])
				default:
					labels[l]++
				}
			}
			docs = append(docs, doc)
			off += n
		}
		if off != row.Tokens && off != seqLen {
			t.Fatalf("row %d: documents end at %d, real tokens %d", r, off, row.Tokens)
		}
	}
	return docs, labels
}

// sameDocs reports whether two lists of token sequences hold the same
// sequences, in any order.
func sameDocs(a, b [][]int32) bool {
	key := func(d [][]int32) []string {
		var k []string
		for _, x := range d {
			k = append(k, fmt.Sprint(x))
		}
		slices.Sort(k)
		return k
	}
	return slices.Equal(key(a), key(b))
}

func TestFitCut(t *testing.T) {
	ex := []Example{
		{IDs: []int32{1, 2, 3}, Loss: []bool{false, true, true}, Source: "a"},
		{IDs: []int32{4, 5, 6, 7, 8, 9}, Loss: []bool{false, false, true, true, true, true}, Source: "b"},
		{IDs: []int32{10, 11, 12, 13, 14}, Loss: []bool{true, false, false, false, true}, Source: "c"}, // its target is past 4
		{IDs: []int32{15, 16}, Loss: []bool{true, false}, Source: "d"},                                 // no target: Loss[0] does not count
		{IDs: []int32{}, Loss: []bool{}, Source: "e"},
	}
	for _, long := range []string{"", LongCut} {
		got, st, err := Fit(ex, 4, long)
		if err != nil {
			t.Fatal(err)
		}
		want := []Example{ex[0], {IDs: []int32{4, 5, 6, 7}, Loss: []bool{false, false, true, true}, Source: "b"}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q: got %+v, want %+v", long, got, want)
		}
		wantSt := FitStats{Cut: 2, Dropped: 1, DroppedTokens: 2 + 5, Empty: 2}
		if st != wantSt {
			t.Errorf("%q: stats %+v, want %+v", long, st, wantSt)
		}
	}
	for _, tc := range []struct {
		ex     []Example
		seqLen int
		long   string
		err    string
	}{
		{ex, 1, "", "sequence length 1"},
		{ex, 4, "truncate", `"truncate"`},
		{[]Example{{IDs: []int32{1, 2}, Loss: []bool{true}, Source: "x.jsonl:3"}}, 4, "", "x.jsonl:3: 2 tokens but 1 loss flags"},
	} {
		if _, _, err := Fit(tc.ex, tc.seqLen, tc.long); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("error %v, want %q", err, tc.err)
		}
	}
}

func TestFitSplit(t *testing.T) {
	// 10 tokens in rows of 4: chunks [0,4) [3,7) [6,10), each starting with
	// the last token of the one before.
	ids := []int32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	all := slices.Repeat([]bool{true}, 10)
	got, st, err := Fit([]Example{{IDs: ids, Loss: all, Source: "s"}}, 4, LongSplit)
	if err != nil {
		t.Fatal(err)
	}
	var chunks [][]int32
	for _, c := range got {
		chunks = append(chunks, c.IDs)
		if c.Source != "s" {
			t.Errorf("chunk source %q", c.Source)
		}
	}
	if want := [][]int32{{0, 1, 2, 3}, {3, 4, 5, 6}, {6, 7, 8, 9}}; !reflect.DeepEqual(chunks, want) {
		t.Errorf("chunks %v, want %v", chunks, want)
	}
	if want := (FitStats{Split: 1, Chunks: 3}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	// 11 tokens: a last chunk [9,11) of two tokens.
	got, _, _ = Fit([]Example{{IDs: append(ids, 10), Loss: append(all, true), Source: "s"}}, 4, LongSplit)
	if len(got) != 4 || !slices.Equal(got[3].IDs, []int32{9, 10}) {
		t.Errorf("11 tokens: %+v", got)
	}
	// The middle chunk holds no target: dropped, and its tokens that no
	// kept chunk holds (4 and 5) are counted.
	loss := []bool{false, true, true, true, false, false, false, true, true, true}
	got, st, _ = Fit([]Example{{IDs: ids, Loss: loss, Source: "s"}}, 4, LongSplit)
	if len(got) != 2 || !slices.Equal(got[1].IDs, []int32{6, 7, 8, 9}) {
		t.Errorf("dropped chunk: %+v", got)
	}
	if want := (FitStats{Split: 1, Chunks: 2, DroppedChunks: 1, DroppedTokens: 2}); st != want {
		t.Errorf("dropped chunk: stats %+v, want %+v", st, want)
	}
}

// Every target token of the input is a label exactly once across the rows,
// never across a document boundary, whether rows are packed or padded:
// all of them with split, those within the first SeqLen tokens with cut.
func TestRowsKeepEveryTarget(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const padID = -7 // distinct from every token id
	for _, seqLen := range []int{2, 3, 16, 64} {
		ex := uniqueExamples(rng, 300, 80)
		for _, long := range []string{LongCut, LongSplit} {
			fitted, st, err := Fit(ex, seqLen, long)
			if err != nil {
				t.Fatal(err)
			}
			want := targetIDs(fitted)
			if long == LongSplit {
				if all := targetIDs(ex); !reflect.DeepEqual(want, all) {
					t.Fatalf("seqLen %d: split lost targets: %d of %d kept", seqLen, len(want), len(all))
				}
			}
			for name, rows := range map[string][]Row{"Pack": Pack(fitted, seqLen, padID), "Pad": Pad(fitted, seqLen, padID)} {
				docs, labels := checkRows(t, rows, seqLen, padID)
				var fittedIDs [][]int32
				for _, e := range fitted {
					fittedIDs = append(fittedIDs, e.IDs)
				}
				if !sameDocs(docs, fittedIDs) {
					t.Fatalf("%s seqLen %d %s: the rows' documents are not the examples", name, seqLen, long)
				}
				for id, n := range labels {
					if n != 1 || !want[id] {
						t.Fatalf("%s seqLen %d %s: token %d is a label %d times, target %v", name, seqLen, long, id, n, want[id])
					}
				}
				if len(labels) != len(want) {
					t.Fatalf("%s seqLen %d %s: %d targets are labels, want %d", name, seqLen, long, len(labels), len(want))
				}
				if name == "Pad" && len(rows) != len(fitted) {
					t.Fatalf("Pad: %d rows for %d examples", len(rows), len(fitted))
				}
			}
			// Tokens in = tokens out + dropped.
			in, out := 0, 0
			for _, e := range ex {
				if e.Targets() > 0 {
					in += len(e.IDs)
				}
			}
			seen := map[int32]bool{}
			for _, e := range fitted {
				for _, id := range e.IDs {
					seen[id] = true
				}
			}
			out = len(seen)
			if in != out+st.DroppedTokens {
				t.Errorf("seqLen %d %s: %d tokens in, %d out + %d dropped", seqLen, long, in, out, st.DroppedTokens)
			}
		}
	}
}

func TestPackFirstFitDecreasing(t *testing.T) {
	mk := func(n int) Example {
		e := Example{IDs: make([]int32, n), Loss: make([]bool, n)}
		for i := range n {
			e.IDs[i] = int32(100*n + i)
			e.Loss[i] = true
		}
		return e
	}
	ex := []Example{mk(2), mk(5), mk(3), mk(6), mk(4)}
	rows := Pack(ex, 10, 0)
	// Longest first: 6 opens row 0, 5 row 1, 4 fits row 0, 3 and 2 row 1.
	want := [][]int{{6, 4}, {5, 3, 2}}
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2", len(rows))
	}
	for r, row := range rows {
		if !reflect.DeepEqual(row.DocLens, want[r]) || row.Tokens != 10 {
			t.Errorf("row %d: documents %v (%d tokens), want %v", r, row.DocLens, row.Tokens, want[r])
		}
	}
	if got := rows[0].Labels[:6]; !slices.Equal(got, []int32{601, 602, 603, 604, 605, IgnoreLabel}) {
		t.Errorf("labels of the first document %v", got)
	}
	// A row with room left is padded: one document of padding.
	rows = Pack([]Example{mk(3), mk(4)}, 10, 9)
	if len(rows) != 1 || !reflect.DeepEqual(rows[0].DocLens, []int{4, 3, 3}) || rows[0].Tokens != 7 || rows[0].IDs[9] != 9 {
		t.Errorf("padded row %+v", rows)
	}
	// Packing is deterministic and uses about as many rows as the tokens need.
	rng := rand.New(rand.NewPCG(5, 6))
	ex = uniqueExamples(rng, 2000, 200)
	a, b := Pack(ex, 512, 0), Pack(ex, 512, 0)
	if !reflect.DeepEqual(a, b) {
		t.Error("Pack gave two results for the same input")
	}
	tokens := 0
	for _, e := range ex {
		tokens += len(e.IDs)
	}
	lower := (tokens + 511) / 512
	if len(a) > lower+lower/50+1 {
		t.Errorf("%d rows for %d tokens, at least %d needed: FFD should be within 2%%", len(a), tokens, lower)
	}
	t.Logf("%d tokens in %d rows of 512 (%d at best)", tokens, len(a), lower)
	// Degenerate input.
	if len(Pack(nil, 8, 0)) != 0 || len(Pack(ex, 0, 0)) != 0 || len(Pad(ex, 0, 0)) != 0 {
		t.Error("no rows expected")
	}
	if rows := Pack([]Example{{IDs: []int32{}, Loss: []bool{}}}, 8, 0); len(rows) != 0 {
		t.Errorf("an empty example made rows: %+v", rows)
	}
}

func TestPad(t *testing.T) {
	ex := []Example{
		{IDs: []int32{1, 2, 3}, Loss: []bool{false, false, true}},
		{IDs: []int32{4, 5, 6, 7}, Loss: []bool{true, true, true, true}},
		{IDs: []int32{8, 9, 10, 11, 12}, Loss: []bool{false, true, true, true, true}}, // cut
	}
	rows := Pad(ex, 4, 0)
	want := []Row{
		{IDs: []int32{1, 2, 3, 0}, Labels: []int32{-100, 3, -100, -100}, DocLens: []int{3, 1}, Tokens: 3},
		{IDs: []int32{4, 5, 6, 7}, Labels: []int32{5, 6, 7, -100}, DocLens: []int{4}, Tokens: 4},
		{IDs: []int32{8, 9, 10, 11}, Labels: []int32{9, 10, 11, -100}, DocLens: []int{4}, Tokens: 4},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("got %+v\nwant %+v", rows, want)
	}
}

func TestBatches(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	rows := make([]Row, 103)
	for i := range rows {
		rows[i].Tokens = 1 + rng.IntN(50)
	}
	b := Batches(rows, 4, 42, 0)
	if len(b) != 26 {
		t.Fatalf("%d batches, want 26", len(b))
	}
	seen := make([]int, len(rows))
	short := 0
	for _, batch := range b {
		if len(batch) != 4 {
			short++
			if len(batch) != 3 {
				t.Errorf("a batch of %d rows", len(batch))
			}
		}
		for _, i := range batch {
			seen[i]++
		}
	}
	if short != 1 || slices.ContainsFunc(seen, func(n int) bool { return n != 1 }) {
		t.Errorf("%d short batches; times each row was seen: %v", short, seen)
	}
	// Bucketing: the batches' length ranges do not overlap.
	type span struct{ lo, hi int }
	var spans []span
	for _, batch := range b {
		s := span{1 << 30, 0}
		for _, i := range batch {
			s.lo, s.hi = min(s.lo, rows[i].Tokens), max(s.hi, rows[i].Tokens)
		}
		spans = append(spans, s)
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Or(a.lo-b.lo, a.hi-b.hi) })
	for i := 1; i < len(spans); i++ {
		if spans[i].lo < spans[i-1].hi {
			t.Errorf("batches of lengths %v and %v overlap", spans[i-1], spans[i])
		}
	}
	// The same seed and epoch give the same order; other epochs and seeds
	// other orders.
	if !reflect.DeepEqual(b, Batches(rows, 4, 42, 0)) {
		t.Error("same seed and epoch, different batches")
	}
	if reflect.DeepEqual(b, Batches(rows, 4, 42, 1)) || reflect.DeepEqual(b, Batches(rows, 4, 43, 0)) {
		t.Error("another epoch or seed gave the same batches")
	}
	// Rows of one length still mix between epochs.
	same := make([]Row, 40)
	if reflect.DeepEqual(Batches(same, 4, 1, 0), Batches(same, 4, 1, 1)) {
		t.Error("equal-length rows make the same batches every epoch")
	}
	if Batches(nil, 4, 1, 0) != nil {
		t.Error("batches of no rows")
	}
	if got := Batches(rows[:3], 0, 1, 0); len(got) != 3 {
		t.Errorf("rowsPerBatch 0: %v", got)
	}
}

func TestSplit(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	ex := uniqueExamples(rng, 50, 10)
	// Examples 10..12 are chunks of one record.
	ex[11].Source, ex[12].Source = ex[10].Source, ex[10].Source
	train, eval, err := Split(ex, 0.1, 42)
	if err != nil {
		t.Fatal(err)
	}
	if len(train)+len(eval) != 50 || (len(eval) != 5 && len(eval) != 7) {
		t.Errorf("%d train, %d eval", len(train), len(eval))
	}
	inEval := map[string]bool{}
	for _, e := range eval {
		inEval[e.Source] = true
	}
	for _, e := range train {
		if inEval[e.Source] {
			t.Errorf("%s is in both parts", e.Source)
		}
	}
	isSorted := func(x []Example) bool {
		return slices.IsSortedFunc(x, func(a, b Example) int { return int(a.IDs[0] - b.IDs[0]) })
	}
	if !isSorted(train) || !isSorted(eval) {
		t.Error("the parts are not in input order")
	}
	t2, e2, _ := Split(ex, 0.1, 42)
	if !reflect.DeepEqual(t2, train) || !reflect.DeepEqual(e2, eval) {
		t.Error("same seed, different split")
	}
	if _, e3, _ := Split(ex, 0.1, 43); reflect.DeepEqual(e3, eval) {
		t.Error("another seed, same split")
	}
	// At least one held out; none when share is 0.
	if tr, ev, err := Split(ex[:2], 0.01, 1); err != nil || len(ev) != 1 || len(tr) != 1 {
		t.Errorf("tiny share: %d, %d, %v", len(tr), len(ev), err)
	}
	if tr, ev, err := Split(ex, 0, 1); err != nil || len(ev) != 0 || len(tr) != 50 {
		t.Errorf("share 0: %d, %d, %v", len(tr), len(ev), err)
	}
	if tr, ev, err := Split(ex[:1], 0.3, 1); err != nil || len(ev) != 0 || len(tr) != 1 {
		t.Errorf("one example: %d, %d, %v", len(tr), len(ev), err)
	}
	for _, tc := range []struct {
		ex    []Example
		share float64
		err   string
	}{
		{ex[:1], 0.5, "leaves none for training"},
		{ex[:3], 0.9, "leaves none for training"},
		{ex, 1, "want at least 0 and less than 1"},
		{ex, -0.1, "want at least 0"},
	} {
		if _, _, err := Split(tc.ex, tc.share, 1); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("share %g of %d: %v, want %q", tc.share, len(tc.ex), err, tc.err)
		}
	}
}

// An example of exactly seqLen tokens fits: it is kept as it is and counts
// as neither cut nor split. A split whose trailing chunks hold no target
// drops them and counts their tokens.
func TestFitEdges(t *testing.T) {
	ex := Example{IDs: []int32{1, 2, 3, 4}, Loss: []bool{false, true, true, true}, Source: "full"}
	for _, long := range []string{LongCut, LongSplit} {
		got, st, err := Fit([]Example{ex}, 4, long)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, []Example{ex}) || st != (FitStats{}) {
			t.Errorf("%s, %d tokens in rows of 4: got %+v, stats %+v; want the example unchanged, no stats", long, len(ex.IDs), got, st)
		}
	}
	// 10 tokens in rows of 4, targets 1..3 only: chunk [0,4) is kept,
	// [3,7) and [6,10) are dropped, and tokens 4..9 are in no kept chunk.
	ids := []int32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	loss := []bool{false, true, true, true, false, false, false, false, false, false}
	got, st, err := Fit([]Example{{IDs: ids, Loss: loss, Source: "s"}}, 4, LongSplit)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !slices.Equal(got[0].IDs, ids[:4]) {
		t.Errorf("trailing chunks without targets: got %+v, want the chunk %v", got, ids[:4])
	}
	if want := (FitStats{Split: 1, Chunks: 1, DroppedChunks: 2, DroppedTokens: 6}); st != want {
		t.Errorf("trailing chunks without targets: stats %+v, want %+v", st, want)
	}
	// 11 tokens: the last chunk [9,11) holds two; nothing is dropped.
	got, st, _ = Fit([]Example{{IDs: append(ids, 10), Loss: slices.Repeat([]bool{true}, 11), Source: "s"}}, 4, LongSplit)
	if want := (FitStats{Split: 1, Chunks: 4}); len(got) != 4 || st != want {
		t.Errorf("11 tokens: %d chunks, stats %+v; want 4, %+v", len(got), st, want)
	}
}

// Pad skips an empty example, as Pack does: no row of padding alone.
func TestPadSkipsEmptyLikePack(t *testing.T) {
	ex := []Example{{IDs: []int32{}, Loss: []bool{}}, {IDs: []int32{1, 2}, Loss: []bool{false, true}}}
	rows := Pad(ex, 3, 0)
	want := []Row{{IDs: []int32{1, 2, 0}, Labels: []int32{2, -100, -100}, DocLens: []int{2, 1}, Tokens: 2}}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("got %+v, want %+v", rows, want)
	}
}

// The batches of rows of distinct lengths come in a shuffled order, not
// from the shortest to the longest.
func TestBatchesShuffled(t *testing.T) {
	rows := make([]Row, 40)
	for i := range rows {
		rows[i].Tokens = i + 1
	}
	b := Batches(rows, 4, 42, 0)
	ascending := slices.IsSortedFunc(b, func(x, y []int) int { return cmp.Compare(rows[x[0]].Tokens, rows[y[0]].Tokens) })
	if len(b) != 10 || ascending {
		t.Errorf("got %d batches, ascending %v; want 10 in a shuffled order: %v", len(b), ascending, b)
	}
}

// Examples without a Source are groups of their own in Split: they do
// not all go to one part together.
func TestSplitEmptySources(t *testing.T) {
	ex := make([]Example, 10)
	for i := range ex {
		ex[i] = Example{IDs: []int32{int32(i), int32(i)}, Loss: []bool{false, true}}
	}
	train, eval, err := Split(ex, 0.3, 1)
	if err != nil || len(train) != 7 || len(eval) != 3 {
		t.Errorf("share 0.3 of 10 examples without a source: got %d train, %d eval, %v; want 7, 3", len(train), len(eval), err)
	}
}

// Pack cuts an example longer than a row to seqLen tokens and places it
// by that length: first, in a row of its own.
func TestPackCutsLong(t *testing.T) {
	long := Example{IDs: []int32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, Loss: slices.Repeat([]bool{true}, 12)}
	short := Example{IDs: []int32{20, 21, 22}, Loss: []bool{false, true, true}}
	rows := Pack([]Example{short, long}, 10, 0)
	var got [][]int
	for _, r := range rows {
		got = append(got, r.DocLens)
	}
	if want := [][]int{{10}, {3, 7}}; !reflect.DeepEqual(got, want) {
		t.Errorf("documents per row %v, want %v", got, want)
	}
	if len(rows) > 0 && !slices.Equal(rows[0].IDs, long.IDs[:10]) {
		t.Errorf("first row %v, want %v", rows[0].IDs, long.IDs[:10])
	}
}
