package tokenizer

// byteChars is GPT-2's bytes_to_unicode: byte-level BPE vocabularies spell
// each byte as a printable character. Printable Latin-1 bytes stand for
// themselves; the others map to U+0100 onwards in byte order.
var byteChars = func() [256]rune {
	var m [256]rune
	n := rune(0)
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			m[b] = rune(b)
		} else {
			m[b] = 256 + n
			n++
		}
	}
	return m
}()

// charBytes inverts byteChars.
var charBytes = func() map[rune]byte {
	m := make(map[rune]byte, 256)
	for b, r := range byteChars {
		m[r] = byte(b)
	}
	return m
}()

// byteLevelDecode turns a vocabulary token back into the bytes it spells.
// ok is false when a character is not one of the 256 byte characters; the
// ByteLevel decoder then keeps the token's own UTF-8 bytes.
func byteLevelDecode(tok string) (b []byte, ok bool) {
	for _, r := range tok {
		c, ok := charBytes[r]
		if !ok {
			return nil, false
		}
		b = append(b, c)
	}
	return b, true
}

// A mergeTable maps a pair of token ids to the rank of their merge and the id
// of the merged token. It is an open-addressing hash table keyed by the pair
// packed into a uint64: merges are looked up for every adjacent pair of
// every word, and a Go map costs about twice as much per lookup.
type mergeTable struct {
	keys []uint64 // pair+1, so that 0 marks an empty slot
	vals []uint64 // rank<<32 | merged id
	mask uint64
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

func newMergeTable(n int) *mergeTable {
	size := 1
	for size < 2*n {
		size <<= 1
	}
	return &mergeTable{keys: make([]uint64, size), vals: make([]uint64, size), mask: uint64(size - 1)}
}

func (t *mergeTable) slot(key uint64) uint64 {
	h := key * 0x9E3779B97F4A7C15
	return (h ^ h>>29) & t.mask
}

// put sets the merge of a pair; a later merge of the same pair replaces an
// earlier one, as HF tokenizers' hash map does.
func (t *mergeTable) put(a, b int32, rank, id int32) {
	k := pairKey(a, b) + 1
	for i := t.slot(k); ; i = (i + 1) & t.mask {
		if t.keys[i] == 0 || t.keys[i] == k {
			t.keys[i] = k
			t.vals[i] = uint64(uint32(rank))<<32 | uint64(uint32(id))
			return
		}
	}
}

// get returns rank<<32|id of the pair's merge; ok is false when there is none.
func (t *mergeTable) get(a, b int32) (uint64, bool) {
	k := pairKey(a, b) + 1
	for i := t.slot(k); ; i = (i + 1) & t.mask {
		switch t.keys[i] {
		case k:
			return t.vals[i], true
		case 0:
			return 0, false
		}
	}
}

// noMerge is larger than any rank<<32|id.
const noMerge = ^uint64(0)

// bpeModel is a byte-level BPE model: the id of each byte, the merges, and
// for ignore_merges the ids of whole tokens keyed by the bytes they spell.
type bpeModel struct {
	byteID       [256]int32
	merges       *mergeTable
	tokens       map[string]int32
	ignoreMerges bool
}

// smallWord is the length up to which a word is merged by scanning an array
// of pair ranks; longer words use a heap, which is O(n log n) instead of
// O(n^2). Both apply the same merges in the same order: the lowest rank
// first and, among equal ranks, the leftmost.
const smallWord = 64

// bpeScratch holds the buffers of one word's merge, reused across words.
type bpeScratch struct {
	ids   []int32
	ranks []uint64
	heap  mergeHeap
	syms  []symbol
}

// encodeWord appends the ids of one pre-token (raw bytes) to out.
func (m *bpeModel) encodeWord(w string, sc *bpeScratch, out []int32) []int32 {
	if len(w) == 1 {
		return append(out, m.byteID[w[0]])
	}
	if m.ignoreMerges {
		if id, ok := m.tokens[w]; ok {
			return append(out, id)
		}
	}
	if len(w) > smallWord {
		return m.mergeLong(w, sc, out)
	}
	return m.mergeShort(w, sc, out)
}

// mergeShort merges a short word by scanning the ranks of adjacent pairs.
func (m *bpeModel) mergeShort(w string, sc *bpeScratch, out []int32) []int32 {
	ids := sc.ids[:0]
	for i := 0; i < len(w); i++ {
		ids = append(ids, m.byteID[w[i]])
	}
	// ranks[i] is the merge of ids[i] and ids[i+1].
	ranks := sc.ranks[:0]
	for i := 0; i+1 < len(ids); i++ {
		ranks = append(ranks, m.mergeOf(ids[i], ids[i+1]))
	}
	for {
		best, at := noMerge, -1
		for i, r := range ranks {
			if r < best {
				best, at = r, i
			}
		}
		if at < 0 {
			break
		}
		ids[at] = int32(uint32(best))
		ids = append(ids[:at+1], ids[at+2:]...)
		ranks = append(ranks[:at], ranks[at+1:]...)
		if at > 0 {
			ranks[at-1] = m.mergeOf(ids[at-1], ids[at])
		}
		if at < len(ranks) {
			ranks[at] = m.mergeOf(ids[at], ids[at+1])
		}
	}
	sc.ids, sc.ranks = ids, ranks
	return append(out, ids...)
}

func (m *bpeModel) mergeOf(a, b int32) uint64 {
	if v, ok := m.merges.get(a, b); ok {
		return v
	}
	return noMerge
}

// symbol is one token of a long word being merged, in a doubly linked list.
type symbol struct {
	id         int32
	prev, next int32 // -1 at the ends
	gone       bool  // merged into its left neighbour
}

// candidate is a possible merge of the symbol at pos with its right
// neighbour; stale candidates are recognised and skipped when popped.
type candidate struct {
	rank uint64 // rank<<32 | merged id
	pos  int32
}

// mergeHeap is a binary min-heap of candidates ordered by rank, then
// position: the lowest-ranked merge first and, among equal ranks, the
// leftmost. (container/heap would box every candidate in an interface.)
type mergeHeap []candidate

func (h mergeHeap) less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].pos < h[j].pos
}

func (h *mergeHeap) push(c candidate) {
	*h = append(*h, c)
	q := *h
	for i := len(q) - 1; i > 0; {
		parent := (i - 1) / 2
		if !q.less(i, parent) {
			break
		}
		q[i], q[parent] = q[parent], q[i]
		i = parent
	}
}

func (h *mergeHeap) pop() candidate {
	q := *h
	top := q[0]
	n := len(q) - 1
	q[0] = q[n]
	q = q[:n]
	for i := 0; ; {
		l, r, least := 2*i+1, 2*i+2, i
		if l < n && q.less(l, least) {
			least = l
		}
		if r < n && q.less(r, least) {
			least = r
		}
		if least == i {
			break
		}
		q[i], q[least] = q[least], q[i]
		i = least
	}
	*h = q
	return top
}

// mergeLong merges a long word with a priority queue, as HF tokenizers does.
func (m *bpeModel) mergeLong(w string, sc *bpeScratch, out []int32) []int32 {
	syms := sc.syms[:0]
	for i := 0; i < len(w); i++ {
		syms = append(syms, symbol{id: m.byteID[w[i]], prev: int32(i - 1), next: int32(i + 1)})
	}
	syms[len(syms)-1].next = -1
	h := sc.heap[:0]
	for i := 0; i+1 < len(syms); i++ {
		if r := m.mergeOf(syms[i].id, syms[i+1].id); r != noMerge {
			h.push(candidate{r, int32(i)})
		}
	}
	for len(h) > 0 {
		c := h.pop()
		s := &syms[c.pos]
		if s.gone || s.next < 0 {
			continue
		}
		right := &syms[s.next]
		if m.mergeOf(s.id, right.id) != c.rank {
			continue // the pair changed since this candidate was pushed
		}
		s.id = int32(uint32(c.rank))
		right.gone = true
		s.next = right.next
		if s.next >= 0 {
			syms[s.next].prev = c.pos
			if r := m.mergeOf(s.id, syms[s.next].id); r != noMerge {
				h.push(candidate{r, c.pos})
			}
		}
		if s.prev >= 0 {
			if r := m.mergeOf(syms[s.prev].id, s.id); r != noMerge {
				h.push(candidate{r, s.prev})
			}
		}
	}
	for i := int32(0); i >= 0; i = syms[i].next {
		out = append(out, syms[i].id)
	}
	sc.syms, sc.heap = syms, h
	return out
}
