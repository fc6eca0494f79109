package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// Extended grapheme clusters (Unicode UAX #29), which HF tokenizers'
// Precompiled normalizer walks the text by (through the Rust crate
// unicode-segmentation). Every rule is implemented except GB9c (Indic
// conjuncts: consonant, virama, consonant): all the characters it joins are
// three bytes long, so the clusters it makes are at least six bytes, which
// the normalizer treats character by character whether joined or not.

// graphemeClass is a character's Grapheme_Cluster_Break property.
type graphemeClass uint8

const (
	gcOther graphemeClass = iota
	gcCR
	gcLF
	gcControl
	gcExtend
	gcZWJ
	gcRegionalIndicator
	gcPrepend
	gcSpacingMark
	gcL
	gcV
	gcT
	gcLV
	gcLVT
)

// graphemePrepend is Grapheme_Cluster_Break=Prepend (Unicode 15).
var graphemePrepend = &unicode.RangeTable{
	R16: []unicode.Range16{
		{0x0600, 0x0605, 1}, {0x06DD, 0x06DD, 1}, {0x070F, 0x070F, 1}, {0x0890, 0x0891, 1},
		{0x08E2, 0x08E2, 1}, {0x0D4E, 0x0D4E, 1},
	},
	R32: []unicode.Range32{
		{0x110BD, 0x110BD, 1}, {0x110CD, 0x110CD, 1}, {0x111C2, 0x111C3, 1}, {0x1193F, 0x1193F, 1},
		{0x11941, 0x11941, 1}, {0x11A3A, 0x11A3A, 1}, {0x11A84, 0x11A89, 1}, {0x11D46, 0x11D46, 1},
		{0x11F02, 0x11F02, 1},
	},
}

// notSpacingMark lists the spacing combining marks (Mc) that are not
// Grapheme_Cluster_Break=SpacingMark.
var notSpacingMark = &unicode.RangeTable{
	R16: []unicode.Range16{
		{0x102B, 0x102C, 1}, {0x1038, 0x1038, 1}, {0x1062, 0x1064, 1}, {0x1067, 0x106D, 1},
		{0x1083, 0x1083, 1}, {0x1087, 0x108C, 1}, {0x108F, 0x108F, 1}, {0x109A, 0x109C, 1},
		{0x1A61, 0x1A61, 1}, {0x1A63, 0x1A64, 1}, {0xAA7B, 0xAA7B, 1}, {0xAA7D, 0xAA7D, 1},
	},
	R32: []unicode.Range32{{0x11720, 0x11721, 1}},
}

// extendedPictographic is the Extended_Pictographic property, as Node's
// ICU 78 (Unicode 17) reports it for /\p{Extended_Pictographic}/u.
var extendedPictographic = &unicode.RangeTable{
	R16: []unicode.Range16{
		{0xA9, 0xA9, 1}, {0xAE, 0xAE, 1}, {0x203C, 0x203C, 1}, {0x2049, 0x2049, 1}, {0x2122, 0x2122, 1},
		{0x2139, 0x2139, 1}, {0x2194, 0x2199, 1}, {0x21A9, 0x21AA, 1}, {0x231A, 0x231B, 1}, {0x2328, 0x2328, 1},
		{0x23CF, 0x23CF, 1}, {0x23E9, 0x23F3, 1}, {0x23F8, 0x23FA, 1}, {0x24C2, 0x24C2, 1}, {0x25AA, 0x25AB, 1},
		{0x25B6, 0x25B6, 1}, {0x25C0, 0x25C0, 1}, {0x25FB, 0x25FE, 1}, {0x2600, 0x2604, 1}, {0x260E, 0x260E, 1},
		{0x2611, 0x2611, 1}, {0x2614, 0x2615, 1}, {0x2618, 0x2618, 1}, {0x261D, 0x261D, 1}, {0x2620, 0x2620, 1},
		{0x2622, 0x2623, 1}, {0x2626, 0x2626, 1}, {0x262A, 0x262A, 1}, {0x262E, 0x262F, 1}, {0x2638, 0x263A, 1},
		{0x2640, 0x2640, 1}, {0x2642, 0x2642, 1}, {0x2648, 0x2653, 1}, {0x265F, 0x2660, 1}, {0x2663, 0x2663, 1},
		{0x2665, 0x2666, 1}, {0x2668, 0x2668, 1}, {0x267B, 0x267B, 1}, {0x267E, 0x267F, 1}, {0x2692, 0x2697, 1},
		{0x2699, 0x2699, 1}, {0x269B, 0x269C, 1}, {0x26A0, 0x26A1, 1}, {0x26A7, 0x26A7, 1}, {0x26AA, 0x26AB, 1},
		{0x26B0, 0x26B1, 1}, {0x26BD, 0x26BE, 1}, {0x26C4, 0x26C5, 1}, {0x26C8, 0x26C8, 1}, {0x26CE, 0x26CF, 1},
		{0x26D1, 0x26D1, 1}, {0x26D3, 0x26D4, 1}, {0x26E9, 0x26EA, 1}, {0x26F0, 0x26F5, 1}, {0x26F7, 0x26FA, 1},
		{0x26FD, 0x26FD, 1}, {0x2702, 0x2702, 1}, {0x2705, 0x2705, 1}, {0x2708, 0x270D, 1}, {0x270F, 0x270F, 1},
		{0x2712, 0x2712, 1}, {0x2714, 0x2714, 1}, {0x2716, 0x2716, 1}, {0x271D, 0x271D, 1}, {0x2721, 0x2721, 1},
		{0x2728, 0x2728, 1}, {0x2733, 0x2734, 1}, {0x2744, 0x2744, 1}, {0x2747, 0x2747, 1}, {0x274C, 0x274C, 1},
		{0x274E, 0x274E, 1}, {0x2753, 0x2755, 1}, {0x2757, 0x2757, 1}, {0x2763, 0x2764, 1}, {0x2795, 0x2797, 1},
		{0x27A1, 0x27A1, 1}, {0x27B0, 0x27B0, 1}, {0x27BF, 0x27BF, 1}, {0x2934, 0x2935, 1}, {0x2B05, 0x2B07, 1},
		{0x2B1B, 0x2B1C, 1}, {0x2B50, 0x2B50, 1}, {0x2B55, 0x2B55, 1}, {0x3030, 0x3030, 1}, {0x303D, 0x303D, 1},
		{0x3297, 0x3297, 1}, {0x3299, 0x3299, 1},
	},
	R32: []unicode.Range32{
		{0x1F004, 0x1F004, 1}, {0x1F02C, 0x1F02F, 1}, {0x1F094, 0x1F09F, 1}, {0x1F0AF, 0x1F0B0, 1},
		{0x1F0C0, 0x1F0C0, 1}, {0x1F0CF, 0x1F0D0, 1}, {0x1F0F6, 0x1F0FF, 1}, {0x1F170, 0x1F171, 1},
		{0x1F17E, 0x1F17F, 1}, {0x1F18E, 0x1F18E, 1}, {0x1F191, 0x1F19A, 1}, {0x1F1AE, 0x1F1E5, 1},
		{0x1F201, 0x1F20F, 1}, {0x1F21A, 0x1F21A, 1}, {0x1F22F, 0x1F22F, 1}, {0x1F232, 0x1F23A, 1},
		{0x1F23C, 0x1F23F, 1}, {0x1F249, 0x1F25F, 1}, {0x1F266, 0x1F321, 1}, {0x1F324, 0x1F393, 1},
		{0x1F396, 0x1F397, 1}, {0x1F399, 0x1F39B, 1}, {0x1F39E, 0x1F3F0, 1}, {0x1F3F3, 0x1F3F5, 1},
		{0x1F3F7, 0x1F3FA, 1}, {0x1F400, 0x1F4FD, 1}, {0x1F4FF, 0x1F53D, 1}, {0x1F549, 0x1F54E, 1},
		{0x1F550, 0x1F567, 1}, {0x1F56F, 0x1F570, 1}, {0x1F573, 0x1F57A, 1}, {0x1F587, 0x1F587, 1},
		{0x1F58A, 0x1F58D, 1}, {0x1F590, 0x1F590, 1}, {0x1F595, 0x1F596, 1}, {0x1F5A4, 0x1F5A5, 1},
		{0x1F5A8, 0x1F5A8, 1}, {0x1F5B1, 0x1F5B2, 1}, {0x1F5BC, 0x1F5BC, 1}, {0x1F5C2, 0x1F5C4, 1},
		{0x1F5D1, 0x1F5D3, 1}, {0x1F5DC, 0x1F5DE, 1}, {0x1F5E1, 0x1F5E1, 1}, {0x1F5E3, 0x1F5E3, 1},
		{0x1F5E8, 0x1F5E8, 1}, {0x1F5EF, 0x1F5EF, 1}, {0x1F5F3, 0x1F5F3, 1}, {0x1F5FA, 0x1F64F, 1},
		{0x1F680, 0x1F6C5, 1}, {0x1F6CB, 0x1F6D2, 1}, {0x1F6D5, 0x1F6E5, 1}, {0x1F6E9, 0x1F6E9, 1},
		{0x1F6EB, 0x1F6F0, 1}, {0x1F6F3, 0x1F6FF, 1}, {0x1F7DA, 0x1F7FF, 1}, {0x1F80C, 0x1F80F, 1},
		{0x1F848, 0x1F84F, 1}, {0x1F85A, 0x1F85F, 1}, {0x1F888, 0x1F88F, 1}, {0x1F8AE, 0x1F8AF, 1},
		{0x1F8BC, 0x1F8BF, 1}, {0x1F8C2, 0x1F8CF, 1}, {0x1F8D9, 0x1F8FF, 1}, {0x1F90C, 0x1F93A, 1},
		{0x1F93C, 0x1F945, 1}, {0x1F947, 0x1F9FF, 1}, {0x1FA58, 0x1FA5F, 1}, {0x1FA6E, 0x1FAFF, 1},
		{0x1FC00, 0x1FFFD, 1},
	},
}

func graphemeClassOf(r rune) graphemeClass {
	switch {
	case r == '\r':
		return gcCR
	case r == '\n':
		return gcLF
	case r == 0x200D:
		return gcZWJ
	case r < 0x7F && r >= 0x20:
		return gcOther // printable ASCII, the common case
	case r >= 0x1F1E6 && r <= 0x1F1FF:
		return gcRegionalIndicator
	case r >= 0x1F3FB && r <= 0x1F3FF: // Emoji_Modifier
		return gcExtend
	case unicode.In(r, unicode.Mn, unicode.Me, unicode.Other_Grapheme_Extend):
		return gcExtend
	case unicode.Is(graphemePrepend, r):
		return gcPrepend
	case unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp):
		return gcControl
	case r == 0x0E33 || r == 0x0EB3 || unicode.Is(unicode.Mc, r) && !unicode.Is(notSpacingMark, r):
		return gcSpacingMark
	case r >= 0xAC00 && r <= 0xD7A3: // Hangul syllables: LV when they have no final consonant
		if (r-0xAC00)%28 == 0 {
			return gcLV
		}
		return gcLVT
	case r >= 0x1100 && r <= 0x115F || r >= 0xA960 && r <= 0xA97C:
		return gcL
	case r >= 0x1160 && r <= 0x11A7 || r >= 0xD7B0 && r <= 0xD7C6:
		return gcV
	case r >= 0x11A8 && r <= 0x11FF || r >= 0xD7CB && r <= 0xD7FB:
		return gcT
	}
	return gcOther
}

// graphemeBreak reports whether there is a cluster boundary between a
// character of class prev and one of class next. riOdd is whether an odd
// number of regional indicators precede next without a break; pictZWJ is
// whether the text before next ends with Extended_Pictographic Extend* ZWJ.
func graphemeBreak(prev, next graphemeClass, riOdd, pictZWJ bool, nextPict bool) bool {
	switch {
	case prev == gcCR && next == gcLF: // GB3
		return false
	case prev == gcCR || prev == gcLF || prev == gcControl: // GB4
		return true
	case next == gcCR || next == gcLF || next == gcControl: // GB5
		return true
	case prev == gcL && (next == gcL || next == gcV || next == gcLV || next == gcLVT): // GB6
		return false
	case (prev == gcLV || prev == gcV) && (next == gcV || next == gcT): // GB7
		return false
	case (prev == gcLVT || prev == gcT) && next == gcT: // GB8
		return false
	case next == gcExtend || next == gcZWJ || next == gcSpacingMark: // GB9, GB9a
		return false
	case prev == gcPrepend: // GB9b
		return false
	case prev == gcZWJ && pictZWJ && nextPict: // GB11
		return false
	case prev == gcRegionalIndicator && next == gcRegionalIndicator: // GB12, GB13
		return !riOdd
	}
	return true // GB999
}

// nextGrapheme returns the length in bytes of the extended grapheme cluster
// at the start of s (which is not empty).
func nextGrapheme(s string) int {
	r, size := utf8.DecodeRuneInString(s)
	prev := graphemeClassOf(r)
	if size == len(s) || prev == gcOther && s[size] < 0x80 && s[size] >= 0x20 && s[size] < 0x7F {
		return size // fast path: a character followed by printable ASCII
	}
	riOdd := prev == gcRegionalIndicator
	// inPict: the text so far ends with Extended_Pictographic Extend*;
	// pictZWJ: with Extended_Pictographic Extend* ZWJ.
	inPict := unicode.Is(extendedPictographic, r)
	pictZWJ := false
	i := size
	for i < len(s) {
		r, size = utf8.DecodeRuneInString(s[i:])
		next := graphemeClassOf(r)
		nextPict := unicode.Is(extendedPictographic, r)
		if graphemeBreak(prev, next, riOdd, pictZWJ, nextPict) {
			break
		}
		switch {
		case next == gcExtend && inPict:
		case next == gcZWJ && inPict:
			pictZWJ, inPict = true, false
		default:
			inPict, pictZWJ = nextPict, false
		}
		if next == gcRegionalIndicator {
			riOdd = !riOdd
		} else {
			riOdd = false
		}
		prev = next
		i += size
	}
	return i
}
