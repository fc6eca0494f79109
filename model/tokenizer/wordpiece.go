package tokenizer

import (
	"fmt"
	"unicode/utf8"
)

// wordPieceModel is BERT's WordPiece: each pre-token is cut greedily into
// the longest vocabulary entries from the left, the pieces after the first
// spelled with the continuing prefix ("##"). A word with a part that no
// entry covers, or longer than maxChars characters, is one unk token.
type wordPieceModel struct {
	vocab    map[string]int
	prefix   string
	maxChars int
	unk      string
}

// encode appends the ids of one pre-token to out.
func (m *wordPieceModel) encode(w string, buf []byte, out []int32) ([]int32, []byte, error) {
	first := len(out)
	if utf8.RuneCountInString(w) <= m.maxChars {
		for start := 0; start < len(w); {
			end := len(w)
			found := false
			for start < end {
				var id int
				var ok bool
				if start > 0 {
					buf = append(append(buf[:0], m.prefix...), w[start:end]...)
					id, ok = m.vocab[string(buf)] // does not allocate
				} else {
					id, ok = m.vocab[w[start:end]]
				}
				if ok {
					out = append(out, int32(id))
					found = true
					break
				}
				_, size := utf8.DecodeLastRuneInString(w[start:end])
				end -= size
			}
			if !found {
				out = out[:first]
				break
			}
			start = end
		}
		if len(out) > first {
			return out, buf, nil
		}
	}
	id, ok := m.vocab[m.unk]
	if !ok {
		return out, buf, fmt.Errorf("wordpiece: unk token %q is not in the vocabulary", m.unk)
	}
	return append(out, int32(id)), buf, nil
}
