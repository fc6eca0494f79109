// Package safetensors reads and writes the safetensors format of Hugging
// Face checkpoints, single files and sharded directories.
//
// # Format
//
// A file is an 8-byte little-endian length N, N bytes of JSON header, then
// the data section:
//
//	{"__metadata__": {"format": "pt"},
//	 "model.norm.weight": {"dtype": "BF16", "shape": [4096], "data_offsets": [0, 8192]},
//	 ...}
//
// Each tensor's data_offsets [begin, end) are relative to the start of the
// data section. Data is little-endian and row-major. "__metadata__" is an
// optional string-to-string map. A sharded checkpoint is a directory of
// such files and model.safetensors.index.json, whose "weight_map" maps each
// tensor name to the file that holds it.
//
// # Validation
//
// Open checks what the reference implementation (huggingface/safetensors,
// safetensors/src/tensor.rs) checks, so that it accepts and refuses the
// same files, and reports the file and the tensor in every error:
//
//   - the file is at least 8 bytes, the header length at most 100,000,000
//     and within the file;
//   - the header is UTF-8 JSON, one object, with only whitespace around it;
//   - every entry has a known dtype, a shape of non-negative integers and
//     two non-negative integer data_offsets with begin <= end (unknown
//     fields are ignored, as in the reference);
//   - the element count times the dtype's size in bits is a whole number
//     of bytes (F4 and the F6 types are smaller than a byte) and equals
//     end - begin, with no overflow;
//   - sorted by offset, the tensors tile the data section exactly: the
//     first starts at 0, each starts where the previous ends, and the last
//     ends at the end of the file (no holes, overlaps or trailing bytes);
//   - "__metadata__" is an object of strings (or null);
//   - no key appears twice, at any level. The format forbids duplicates;
//     the reference only notices them through the hole they leave, and
//     encoding/json would silently keep the last.
//
// Bad input gives an error, never a panic or a read out of range.
//
// # Memory mapping
//
// Open maps the whole file read-only (MAP_SHARED) and parses only the
// header, so opening a file of any size is fast and adds no resident memory
// until tensor data is touched; the kernel pages it in on first access and
// may drop it again under memory pressure. Bytes and Tensor return views
// into the mapping without copying. The views are read-only (writing to
// them faults) and are invalid after Close; copy what must outlive the
// File or be modified. A mapped file that is truncated by another process
// while open makes access fault (SIGBUS), as with any mapping. On systems
// without mmap, the file is read into memory instead.
//
// # Writing
//
// Write lays out the data as the reference writer does (by decreasing dtype
// alignment, then name, so every tensor is aligned to its element size) and
// replaces the target file atomically.
package safetensors
