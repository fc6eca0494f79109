package tokenizer

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// precompiledMap is SentencePiece's compiled normalization rules (the
// precompiled_charsmap of a model's normalizer_spec, base64 in
// tokenizer.json): a Darts double-array trie over the UTF-8 bytes of the
// rules' left-hand sides, whose values are offsets of NUL-terminated
// replacements in a string blob. The layout is a little-endian uint32 trie
// size in bytes, the trie's uint32 units, then the blob.
type precompiledMap struct {
	units      []uint32
	normalized []byte
}

func parsePrecompiled(b64 string) (*precompiledMap, error) {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("precompiled_charsmap: %w", err)
	}
	if len(raw) < 4 {
		return nil, fmt.Errorf("precompiled_charsmap: %d bytes, too short", len(raw))
	}
	size := int(binary.LittleEndian.Uint32(raw))
	if size%4 != 0 || size == 0 || size > len(raw)-4 {
		return nil, fmt.Errorf("precompiled_charsmap: trie size %d does not fit in %d bytes", size, len(raw))
	}
	m := &precompiledMap{units: make([]uint32, size/4), normalized: raw[4+size:]}
	for i := range m.units {
		m.units[i] = binary.LittleEndian.Uint32(raw[4+4*i:])
	}
	if !utf8.Valid(m.normalized) {
		return nil, fmt.Errorf("precompiled_charsmap: replacement strings are not valid UTF-8")
	}
	return m, nil
}

// The fields of a double-array unit, as Darts-clone packs them.
func unitHasLeaf(u uint32) bool  { return u>>8&1 == 1 }
func unitValue(u uint32) uint32  { return u & (1<<31 - 1) }
func unitLabel(u uint32) uint32  { return u & (1<<31 | 0xFF) }
func unitOffset(u uint32) uint32 { return u >> 10 << (u & (1 << 9) >> 6) }

// transform returns the replacement of the shortest rule that is a prefix
// of chunk. HF tokenizers (the spm_precompiled crate) takes the first
// match of Darts' common-prefix search, the shortest, where SentencePiece
// itself takes the longest; the graphemes normalize walks make the two
// agree on almost all text.
func (m *precompiledMap) transform(chunk string) (string, bool) {
	pos := uint32(0)
	if len(m.units) == 0 {
		return "", false
	}
	pos ^= unitOffset(m.units[0])
	for i := 0; i < len(chunk); i++ {
		c := chunk[i]
		if c == 0 {
			break
		}
		pos ^= uint32(c)
		if int(pos) >= len(m.units) {
			return "", false
		}
		u := m.units[pos]
		if unitLabel(u) != uint32(c) {
			return "", false
		}
		pos ^= unitOffset(u)
		if int(pos) >= len(m.units) {
			return "", false
		}
		if unitHasLeaf(u) {
			start := int(unitValue(m.units[pos]))
			if start >= len(m.normalized) {
				return "", false
			}
			end := bytes.IndexByte(m.normalized[start:], 0)
			if end < 0 {
				end = len(m.normalized) - start
			}
			return string(m.normalized[start : start+end]), true
		}
	}
	return "", false
}

// normalize applies the rules as HF tokenizers' Precompiled normalizer
// does: a grapheme cluster shorter than six bytes that starts with a rule
// is replaced whole by that rule's output; anything else is replaced
// character by character.
func (m *precompiledMap) normalize(s string, out []byte) []byte {
	for len(s) > 0 {
		n := nextGrapheme(s)
		g := s[:n]
		s = s[n:]
		if n < 6 {
			if rep, ok := m.transform(g); ok {
				out = append(out, rep...)
				continue
			}
		}
		for len(g) > 0 {
			_, size := utf8.DecodeRuneInString(g)
			if rep, ok := m.transform(g[:size]); ok {
				out = append(out, rep...)
			} else {
				out = append(out, g[:size]...)
			}
			g = g[size:]
		}
	}
	return out
}
