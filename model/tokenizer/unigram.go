package tokenizer

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
)

// unigramPenalty is what the score of an unknown character is below the
// lowest score of the vocabulary (SentencePiece's kUnkPenalty).
const unigramPenalty = 10.0

// unigramModel is the Unigram model of tokenizer.json (SentencePiece's):
// each text is cut into the pieces whose scores (log-probabilities) have
// the largest sum, found by Viterbi over a trie of the pieces.
type unigramModel struct {
	pieces       []string
	scores       []float64
	ids          map[string]int32 // a repeated piece maps to its last id, as in HF
	unkID        int32            // -1 when there is none
	unkScore     float64
	byteFallback bool
	byteIDs      [256]int32 // id of <0xXX>, -1 when missing
	trie         pieceTrie
}

// newUnigram builds the model as HF tokenizers' Unigram::from does.
func newUnigram(pieces []string, scores []float64, unkID int, byteFallback bool) (*unigramModel, error) {
	if len(pieces) == 0 {
		return nil, fmt.Errorf("unigram: the vocabulary is empty")
	}
	if unkID >= len(pieces) {
		return nil, fmt.Errorf("unigram: unk_id %d is not in the vocabulary (%d pieces)", unkID, len(pieces))
	}
	m := &unigramModel{
		pieces: pieces, scores: scores, ids: make(map[string]int32, len(pieces)),
		unkID: int32(unkID), byteFallback: byteFallback,
	}
	minScore := math.Inf(1)
	for i, p := range pieces {
		m.ids[p] = int32(i)
		minScore = min(minScore, scores[i])
	}
	m.unkScore = minScore - unigramPenalty
	for b := range m.byteIDs {
		m.byteIDs[b] = -1
		if id, ok := m.ids[fmt.Sprintf("<0x%02X>", b)]; ok {
			m.byteIDs[b] = id
		}
	}
	m.trie = buildPieceTrie(m.ids)
	return m, nil
}

// unigramScratch holds the lattice of one Viterbi pass, reused.
type unigramScratch struct {
	score []float64
	from  []int32 // start of the best piece ending here; -1 before any
	id    []int32
	ends  []int32
}

// encode appends the ids of one pre-token to out. It follows HF's
// encode_optimized exactly: positions in order, candidate pieces from
// shortest to longest, a candidate replaces the best only when strictly
// better, an unknown character gets unk's score when no piece of one
// character starts there, and adjacent unknowns are fused into one token
// (then byte fallback, or unk).
func (m *unigramModel) encode(s string, sc *unigramScratch, out []int32) ([]int32, error) {
	n := len(s)
	sc.score = slices.Grow(sc.score[:0], n+1)[:n+1]
	sc.from = slices.Grow(sc.from[:0], n+1)[:n+1]
	sc.id = slices.Grow(sc.id[:0], n+1)[:n+1]
	for i := range sc.from {
		sc.score[i], sc.from[i], sc.id[i] = 0, -1, 0
	}
	for start := 0; start < n; {
		base := sc.score[start]
		charLen := utf8Len(s[start])
		single := false
		for node, i := int32(0), start; i < n; i++ {
			node = m.trie.child(node, s[i])
			if node < 0 {
				break
			}
			id := m.trie.id[node]
			if id < 0 {
				continue
			}
			end := i + 1
			if cand := base + m.scores[id]; sc.from[end] < 0 || cand > sc.score[end] {
				sc.score[end], sc.from[end], sc.id[end] = cand, int32(start), id
			}
			if end-start == charLen {
				single = true
			}
		}
		if !single {
			if m.unkID < 0 {
				return out, fmt.Errorf("unigram: %q has no piece and the model has no unk_id", s[start:start+charLen])
			}
			end := start + charLen
			if cand := base + m.unkScore; sc.from[end] < 0 || cand > sc.score[end] {
				sc.score[end], sc.from[end], sc.id[end] = cand, int32(start), m.unkID
			}
		}
		start += charLen
	}
	// Walk back from the end, then emit in order.
	ends := sc.ends[:0]
	for end := n; end > 0; end = int(sc.from[end]) {
		ends = append(ends, int32(end))
	}
	sc.ends = ends
	for k := len(ends) - 1; k >= 0; k-- {
		end := int(ends[k])
		start := int(sc.from[end])
		if sc.id[end] != m.unkID {
			out = append(out, m.ids[s[start:end]])
			continue
		}
		// Fuse the run of unknowns that starts here.
		for k > 0 && sc.id[ends[k-1]] == m.unkID {
			k--
		}
		out = m.appendFused(s[start:ends[k]], out)
	}
	return out, nil
}

// appendFused appends the token of a run of unknown characters: the piece
// it spells if there is one, else its bytes' <0xXX> pieces under byte
// fallback when all exist, else unk.
func (m *unigramModel) appendFused(s string, out []int32) []int32 {
	if id, ok := m.ids[s]; ok {
		return append(out, id)
	}
	if m.byteFallback {
		ok := true
		for i := 0; i < len(s) && ok; i++ {
			ok = m.byteIDs[s[i]] >= 0
		}
		if ok {
			for i := 0; i < len(s); i++ {
				out = append(out, m.byteIDs[s[i]])
			}
			return out
		}
	}
	return append(out, m.unkID)
}

// utf8Len is the length of the UTF-8 sequence a lead byte starts (valid
// input only).
func utf8Len(b byte) int {
	switch {
	case b < 0xC0:
		return 1
	case b < 0xE0:
		return 2
	case b < 0xF0:
		return 3
	}
	return 4
}

// pieceTrie is a byte trie of the pieces, with each node's children in a
// sorted run of the edge arrays.
type pieceTrie struct {
	id         []int32 // node -> piece id, -1 when no piece ends there
	first, num []int32 // node -> its children's run in labels/child
	labels     []byte
	kids       []int32
}

func buildPieceTrie(ids map[string]int32) pieceTrie {
	keys := make([]string, 0, len(ids))
	for k := range ids {
		if k != "" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var t pieceTrie
	t.newNode()
	// add builds the children of node from keys[lo:hi], which share their
	// first depth bytes.
	var add func(node int32, lo, hi, depth int)
	add = func(node int32, lo, hi, depth int) {
		if lo < hi && len(keys[lo]) == depth {
			t.id[node] = ids[keys[lo]]
			lo++
		}
		type run struct {
			lo, hi int
			node   int32
		}
		var runs []run
		t.first[node] = int32(len(t.labels))
		for i := lo; i < hi; {
			j := i + 1
			for j < hi && keys[j][depth] == keys[i][depth] {
				j++
			}
			c := t.newNode()
			t.labels = append(t.labels, keys[i][depth])
			t.kids = append(t.kids, c)
			runs = append(runs, run{i, j, c})
			i = j
		}
		t.num[node] = int32(len(runs))
		for _, r := range runs {
			add(r.node, r.lo, r.hi, depth+1)
		}
	}
	add(0, 0, len(keys), 0)
	return t
}

func (t *pieceTrie) newNode() int32 {
	t.id = append(t.id, -1)
	t.first = append(t.first, 0)
	t.num = append(t.num, 0)
	return int32(len(t.id) - 1)
}

// child returns the child of node along byte c, or -1.
func (t *pieceTrie) child(node int32, c byte) int32 {
	lo, hi := t.first[node], t.first[node]+t.num[node]
	for lo < hi {
		mid := (lo + hi) / 2
		switch l := t.labels[mid]; {
		case l == c:
			return t.kids[mid]
		case l < c:
			lo = mid + 1
		default:
			hi = mid
		}
	}
	return -1
}

// parseUnigramVocab reads the vocabulary of a Unigram model, an array of
// [piece, score] pairs.
func parseUnigramVocab(raw []byte) (pieces []string, scores []float64, err error) {
	s := &scanner{b: raw}
	var ar arena
	var buf []byte
	if err := s.expect('['); err != nil {
		return nil, nil, err
	}
	if s.peek() == ']' {
		s.i++
		return nil, nil, s.end()
	}
	for {
		if err := s.expect('['); err != nil {
			return nil, nil, err
		}
		if buf, err = s.str(buf[:0]); err != nil {
			return nil, nil, err
		}
		if err := s.expect(','); err != nil {
			return nil, nil, err
		}
		num, err := s.skipValue()
		if err != nil {
			return nil, nil, err
		}
		score, err := strconv.ParseFloat(string(num), 64)
		if err != nil || !json.Valid(num) {
			return nil, nil, fmt.Errorf("piece %d (%q): score %s is not a number", len(pieces), buf, num)
		}
		if err := s.expect(']'); err != nil {
			return nil, nil, err
		}
		pieces = append(pieces, ar.str(buf))
		scores = append(scores, score)
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return pieces, scores, s.end()
		default:
			return nil, nil, s.fail("want , or ]")
		}
	}
}
