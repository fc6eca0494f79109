package model

import "fmt"

// docStarts checks docLens (Batch.DocLens) against a batch of B rows of T
// tokens and returns, row after row, where the document of each token
// begins: the attention's docStart. It returns nil when every row is one
// document (docLens nil, or one length per row): plain causal attention.
func docStarts(docLens [][]int, B, T int) ([]int32, error) {
	if docLens == nil {
		return nil, nil
	}
	if len(docLens) != B {
		return nil, fmt.Errorf("model: DocLens has %d rows, the batch %d", len(docLens), B)
	}
	starts := make([]int32, 0, B*T)
	packed := false
	for b, lens := range docLens {
		start := 0
		for i, n := range lens {
			if n <= 0 {
				return nil, fmt.Errorf("model: DocLens[%d][%d] is %d: a document has at least one token", b, i, n)
			}
			if n > T-start {
				return nil, fmt.Errorf("model: DocLens[%d] %v holds more than the row's %d tokens", b, lens, T)
			}
			for range n {
				starts = append(starts, int32(start))
			}
			start += n
		}
		if start != T {
			return nil, fmt.Errorf("model: DocLens[%d] %v sums to %d tokens, the row has %d", b, lens, start, T)
		}
		packed = packed || len(lens) > 1
	}
	if !packed {
		return nil, nil
	}
	return starts, nil
}
