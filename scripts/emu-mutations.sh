#!/usr/bin/env bash
# emu-mutations.sh: shows that the GPU tests of cgo/, run on the emulated
# device (make emu), catch bugs of the Go code that drives the kernels and
# of the kernels themselves. It plants each bug below, one at a time, in a
# copy of the working tree (rebuilding the emulated device when the bug is
# in a kernel's source) and checks that the GPU test named for it then
# fails; before that, each test must pass unchanged. Not part of `make
# test` (minutes); `make mutations` runs it.
#
#	scripts/emu-mutations.sh            every mutation
#	scripts/emu-mutations.sh NAME...    only these (-l lists them)
#	scripts/emu-mutations.sh -c         only check each text is in its file once (make check)
#
# The working tree is never modified: the copy (tracked and untracked files
# git does not ignore) is in a temporary folder, removed on any exit. A
# mutation whose text is no longer in the source is STALE: update it here.
# Exit status: 0 when every mutation is caught, 1 otherwise.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
go=${GO:-go}

names=()
declare -A m_file m_old m_new m_test
# The emulated device's warp order for a mutation's test
# (COMPASS_EMU_WARP_ORDER; unset: all warps at once).
declare -A m_order
# A second edit some mutations need, in another file.
declare -A extra_file extra_old extra_new

mutation() {
  names+=("$1")
  m_file[$1]=$2
  m_old[$1]=$3
  m_new[$1]=$4
  m_test[$1]=$5
}

# Two launch arguments of the same type swapped in cgo/ops.go: SwiGLU's
# backward writes dup where dgate belongs.
mutation swapped-arguments cgo/ops.go \
  'new(Args).Tensor(dgate).Tensor(dup).Tensor(dgateCast)' \
  'new(Args).Tensor(dup).Tensor(dgate).Tensor(dgateCast)' \
  TestGPUSwiGLU

# A wrong leading dimension in the cuBLAS call of every MatMul: cuBLAS
# accepts it (it is not below the rows) and reads past the operand.
mutation wrong-leading-dimension cgo/gemm.go \
  'lda: bCols, ldb: aCols, ldc: N}' \
  'lda: bCols + 1, ldb: aCols, ldc: N}' \
  TestGPUMatMul

# attention_forward's Table entry (told from the others, whose Grid and
# Shared lines may read the same, by its Name line).
att_name=$'{Name: "attention_forward", Source: "attention", Matches: "Attention", Block: 128,\n\t\t'
att_grid='Grid:   func(s Sizes) [3]int { return [3]int{ceilDiv(s.T, attBQ), s.Hq, s.B} },'
att_shared='Shared: func(s Sizes) int { return (attBQ*s.D + 2*attBK*s.D + attBQ*attBK) * f32Bytes }},'

# attention_forward's dynamic shared memory one float too small: the
# kernel's last score of a full tile lands on the emulator's guard page.
mutation shared-one-float-short kernels/kernels.go \
  "$att_name$att_grid"$'\n\t\t'"$att_shared" \
  "$att_name$att_grid"$'\n\t\t''Shared: func(s Sizes) int { return (attBQ*s.D + 2*attBK*s.D + attBQ*attBK - 1) * f32Bytes }},' \
  TestGPUAttention

# A grid.y over 65535 (attention_forward's heads scaled up): Function.Launch
# refuses it.
att_grid_big="$att_name"'Grid:   func(s Sizes) [3]int { return [3]int{ceilDiv(s.T, attBQ), s.Hq << 16, s.B} },'
att_grid="$att_name$att_grid"
mutation grid-y-over-65535 kernels/kernels.go "$att_grid" "$att_grid_big" TestGPUAttention

# The same grid with Function.Launch's own check gone: the emulated
# driver refuses it (CUDA_ERROR_INVALID_VALUE), as a GPU would.
mutation grid-y-over-65535-driver kernels/kernels.go "$att_grid" "$att_grid_big" TestGPUAttention
extra_file[grid-y-over-65535-driver]=cgo/cuda.go
extra_old[grid-y-over-65535-driver]='	case grid.X > maxGridX || grid.Y > maxGridYZ || grid.Z > maxGridYZ:'
extra_new[grid-y-over-65535-driver]='	case grid.X > maxGridX:'

# The kernels themselves (kernels/README.md: "deliberately broken fragment
# layouts, masks, head mappings, barriers and tie rules make it fail"),
# through the operations that launch them.
mutation mma-fragment-a-layout kernels/mma.cuh \
  '  ldmatrix_x4_trans(a.x, s + ((lane & 7) + (lane >> 4) * 8) * ld + ((lane >> 3) & 1) * 8);' \
  '  ldmatrix_x4_trans(a.x, s + ((lane & 7) + ((lane >> 3) & 1) * 8) * ld + (lane >> 4) * 8);  // (mutation: a2..a5 swapped)' \
  TestGPUGradMatMul

mutation mma-fragment-c-layout kernels/mma.cuh \
  '__device__ __forceinline__ int frag_c_col(int lane, int i) { return (lane & 3) * 2 + (i & 1); }' \
  '__device__ __forceinline__ int frag_c_col(int lane, int i) { return (lane & 3) * 2 + ((i + 1) & 1); }  // (mutation)' \
  TestGPUNarrowMatMul

# The forward's mask one key off: each query sees the key after its last
# and not the first of its range.
mutation attention-mask-off-by-one kernels/attention.cu \
  '(unsigned)(k0 + c - ' \
  '(unsigned)(k0 + c - 1 - ' \
  TestGPUAttention

# The forward's query head h reads kv head h % Hkv instead of h / group
# (its line is told from dq's, which reads the same, by the line after it).
mutation attention-head-mapping kernels/attention.cu \
  $'g = h / (Hq / Hkv);\n  int qi = q0 + r;' \
  $'g = h % Hkv;  // (mutation)\n  int qi = q0 + r;' \
  TestGPUAttention

mutation attention-missing-barrier kernels/attention.cu \
  $'    m_run = m_new;\n    __syncthreads();' \
  '    m_run = m_new;  // (mutation: no barrier before the probabilities are read)' \
  TestGPUAttention

mutation block-sum-missing-barrier kernels/common.cuh \
  $'  if (lane == 0) red[warp] = v;\n  __syncthreads();\n  return warp_sum(lane < nwarps ? red[lane] : 0.0f);' \
  $'  if (lane == 0) red[warp] = v;\n  return warp_sum(lane < nwarps ? red[lane] : 0.0f);  // (mutation: no barrier)' \
  TestGPURMSNorm

# RoPE's partial rotary copies the wrong dimension past R.
mutation rope-pass-through kernels/rope.cu \
  '      float v = load_f32(r.x, r.x_dt, base + j + half);' \
  '      float v = load_f32(r.x, r.x_dt, base + j);  // (mutation)' \
  TestGPURoPE

# Scale's loop over groups of 8 leaves the last group unwritten, or runs
# one group past the end (the test's tensors fill their allocator blocks:
# the access faults).
scale_loop=$'    for (size_t g = grid_start(); g < groups; g += grid_stride()) {\n      float v[8];\n      load8(v, a, a_dt, g);'
mutation last-group-unwritten kernels/elementwise.cu "$scale_loop" "${scale_loop/g < groups;/g + 1 < groups;}" TestGPUElementwise
mutation write-one-past-the-end kernels/elementwise.cu "$scale_loop" "${scale_loop/g < groups;/g <= groups;}" TestGPUElementwise

# load8 swaps the two 16-bit elements of each 32-bit word.
mutation load8-halves-swapped kernels/common.cuh \
  '    v[2 * k] = dt == DT_BF16 ? bf16_to_f32(lo) : f16_to_f32(lo);' \
  '    v[2 * k] = dt == DT_BF16 ? bf16_to_f32(hi) : f16_to_f32(hi);  // (mutation)' \
  TestGPUVectorPaths

# k-means ties to the highest index instead of the lowest.
mutation kmeans-tie-rule kernels/kmeans.cu \
  '  return d < best || (d == best && k < best_k);' \
  '  return d < best || (d == best && k > best_k);  // (mutation)' \
  TestGPUKMeansAssign

# The tensor-core k-means without the points' lo part (x.c loses the
# float32 correction of float32 and float16 points).
mutation kmeans-tc-lo-dropped kernels/kmeans.cu \
  '              mma_bf16_m16n8k16(acc[mt][2 * nj], al[mt], bh0);' \
  '              // (mutation) mma_bf16_m16n8k16(acc[mt][2 * nj], al[mt], bh0);' \
  TestGPUKMeansAssign

# The tensor-core k-means computing on a stage before its copies are in.
mutation kmeans-tc-no-wait kernels/kmeans.cu \
  '      cp_async_wait<1>();  // step s - 1'"'"'s tiles are in' \
  '      // (mutation) cp_async_wait<1>();' \
  TestGPUKMeansAssign

# The tensor-core k-means scoring the zero-filled centroids past K.
mutation kmeans-tc-padding-scored kernels/kmeans.cu \
  '        if (k < K) {
          float ck = cn[k];' \
  '        if (k < K + 8) {  // (mutation)
          float ck = k < K ? cn[k] : 0.0f;' \
  TestGPUKMeansAssign

# The k-means update's counting sort ranks a warp's points of a cluster
# in reverse: every point still placed once, but not in index order.
mutation kmeans-sort-unstable kernels/kmeans.cu \
  '        if (j < lane) before++;' \
  '        if (j > lane) before++;  // (mutation)' \
  TestGPUKMeansUpdate

# The clusters' starts as an inclusive prefix sum: each cluster's points
# placed one cluster late.
mutation kmeans-starts-inclusive kernels/kmeans.cu \
  '    if (k < K) start[k] = carry + part[threadIdx.x] - v;' \
  '    if (k < K) start[k] = carry + part[threadIdx.x];  // (mutation)' \
  TestGPUKMeansUpdate

# RMSNorm's output stored in x's dtype, not its own: a float32 row
# written into the bf16 n1 the model keeps.
mutation narrow-output-dtype kernels/rmsnorm.cu \
  '        store8(out, out_dt, gbase + g, v[u]);' \
  '        store8(out, x_dt, gbase + g, v[u]);  // (mutation)' \
  TestGPUVectorPaths

# The residual's fused cast (AddCast) skipped on the single-element tail.
mutation add-cast-tail-unwritten kernels/elementwise.cu \
  '    if (out2 != nullptr) store_f32(out2, out2_dt, i, v);' \
  '    // (mutation) if (out2 != nullptr) store_f32(out2, out2_dt, i, v);' \
  TestGPUVectorPaths

# The cast's 16-byte path taken without checking that its tensors are
# aligned: a "misaligned address" on a GPU, the alignment sanitizer's
# report in the emulator (Makefile's EMU_FLAGS).
mutation cast-alignment-unchecked kernels/elementwise.cu \
  '  if (aligned16(out) && aligned16(in)) {' \
  '  if (true) {  // (mutation)' \
  TestGPUVectorPaths

# SwiGLU's single-element tail stored in the gate's dtype, not the
# output's.
mutation narrow-tail-dtype kernels/swiglu.cu \
  '    store_f32(out, out_dt, i, y);' \
  '    store_f32(out, gate_dt, i, y);  // (mutation)' \
  TestGPUVectorPaths

# SwiGLU backward's fused casts take each other's values in the grouped path.
mutation fused-backward-cast-swapped kernels/swiglu.cu \
  '      if (dup2 != nullptr) store8(dup2, dup2_dt, g8, du);' \
  '      if (dup2 != nullptr) store8(dup2, dup2_dt, g8, dg);  // (mutation)' \
  TestGPUVectorPaths

# RoPE's grouped path copies the wrong group past the rotated dimensions.
mutation rope-group-pass-through kernels/rope.cu \
  '        load8(v, r.x, r.x_dt, base + hg + j);' \
  '        load8(v, r.x, r.x_dt, base + j);  // (mutation)' \
  TestGPUVectorPaths

# The embedding's grouped path reads the row of the position, not of the id.
mutation embedding-group-row kernels/embedding.cu \
  '        load8(v, table, table_dt, (size_t)id * G + g);' \
  '        load8(v, table, table_dt, (size_t)row * G + g);  // (mutation)' \
  TestGPUVectorPaths

# AdamW's 4-wide path leaves the last component of each group's v unwritten.
mutation adamw-group-component kernels/adamw.cu \
  '      adamw_one(p.w, g.w, m.w, v.w, k);' \
  '      // (mutation) adamw_one(p.w, g.w, m.w, v.w, k);' \
  TestGPUVectorPaths

# RoPEPairCast's grouped path leaves the cast of the dimensions past the
# rotary ones (partial rotary) unwritten.
mutation rope-cast-pass-through kernels/rope.cu \
  '        if (r.cast != nullptr) store8(r.cast, r.cast_dt, base + hg + j, v);' \
  '        // (mutation) if (r.cast != nullptr) store8(r.cast, r.cast_dt, base + hg + j, v);' \
  TestGPURoPE

# RoPEPair takes k's token from q's head count: k's rows get the wrong
# position's rotation.
mutation rope-pair-token kernels/rope.cu \
  '  return (size_t)(row / (I)r.heads);' \
  '  return (size_t)(row / (I)a.heads);  // (mutation)' \
  TestGPURoPE

# The LoRA kernels' split product drops the lo x hi term of the first
# n-tile of each pair: plain bf16 precision for half the ranks.
mutation narrow-lo-dropped kernels/lora.cu \
  '  if (ALo) mma_bf16_m16n8k16(c0, al, bh0);' \
  '  // (mutation) if (ALo) mma_bf16_m16n8k16(c0, al, bh0);' \
  TestGPUNarrowMatMul

# lora_narrow_bf16 reads each pair of bf16 with its halves swapped: the
# elements of an A-fragment register trade places.
mutation narrow-bf16-pair-swapped kernels/lora.cu \
  '  return *(const uint32_t*)p;' \
  '  uint32_t w = *(const uint32_t*)p; return (w << 16) | (w >> 16);  // (mutation)' \
  TestGPULoRABF16Input

# lora_narrow's blocks all write their partial sums to the first chunk's
# slot: the others stay unwritten (NaN on the emulated device).
mutation narrow-partial-slot kernels/lora.cu \
  'lora_out(c, (size_t)r * ldc + n, ws, ((size_t)blockIdx.z * R + r) * N + n,' \
  'lora_out(c, (size_t)r * ldc + n, ws, ((size_t)0 * R + r) * N + n,  /* (mutation) */' \
  TestGPUNarrowMatMul

# lora_grad reads the Q tile's A fragment without the transpose: features
# and tokens trade places.
mutation grad-fragment-untransposed kernels/lora.cu \
  '      ldmatrix_frag_a_trans(ah, q_hi + 16 * s * LG_LDQ + 16 * warp, LG_LDQ, lane);' \
  '      ldmatrix_frag_a(ah, q_hi + 16 * s * LG_LDQ + 16 * warp, LG_LDQ, lane);  // (mutation)' \
  TestGPUGradMatMul

# lora_finish (the split products' last block) writes the element (i, m)
# at C's strides swapped: right for a square C only (dB's transposed C
# [M, R] shows it).
mutation finish-strides-swapped kernels/lora.cu \
  '    size_t off = (size_t)r * sci + (size_t)m * scm;' \
  '    size_t off = (size_t)r * scm + (size_t)m * sci;  // (mutation)' \
  TestGPUGradMatMul

# lora_finish's last block leaves its tile's counter at S: the next split
# product over that tile finds no last block, and its C is never written.
mutation finish-counter-kept kernels/lora.cu \
  '    if (last) *counter = 0;  // every block of the tile has counted' \
  '    // (mutation) if (last) *counter = 0;' \
  TestGPUNarrowMatMul

# lora_finish takes the first block to count as the last: it adds the
# partials up before the other blocks have written theirs.
mutation finish-first-block kernels/lora.cu \
  '    last = atomicAdd(counter, 1u) == (unsigned)S - 1;' \
  '    last = atomicAdd(counter, 1u) == 0u;  // (mutation)' \
  TestGPUGradMatMul

# lora_expand writes each lane's pair of columns one column to the right.
mutation expand-column-shift kernels/lora.cu \
  '      int n = n0 + 16 * warp + frag_c_row(lane, 2 * h), m = m0 + 8 * j + frag_c_col(lane, 0);' \
  '      int n = n0 + 16 * warp + frag_c_row(lane, 2 * h), m = m0 + 8 * j + frag_c_col(lane, 1);  // (mutation)' \
  TestGPUExpandMatMul

# Missing barriers in the tensor-core kernels. On the emulated device every
# mma and ldmatrix is a barrier of the whole block unless the warps take
# turns (COMPASS_EMU_WARP_ORDER=shuffle): these are caught in that mode.
# lora_grad's mma read a stage before every warp stored its part.
mutation lora-grad-missing-barrier kernels/lora.cu \
  $'    __syncthreads();\n    if (n0 + LG_BN < nend) load(n0 + LG_BN);' \
  '    if (n0 + LG_BN < nend) load(n0 + LG_BN);  // (mutation: no barrier after the stage is stored)' \
  TestGPUGradMatMul
m_order[lora-grad-missing-barrier]=shuffle

# lora_narrow stores the next stage's P while other warps still read this one.
mutation lora-narrow-stage-overwritten kernels/lora.cu \
  "    __syncthreads();  // the previous stage's P is read" \
  '    // (mutation: no barrier before the next stage overwrites P)' \
  TestGPUNarrowMatMul
m_order[lora-narrow-stage-overwritten]=shuffle

# lora_expand stores the next ranks' tiles while other warps still read these.
mutation lora-expand-stage-overwritten kernels/lora.cu \
  $'  for (int r0 = 0; r0 < R; r0 += LE_BR) {\n    __syncthreads();  // the previous stage\'s tiles are read' \
  $'  for (int r0 = 0; r0 < R; r0 += LE_BR) {\n    // (mutation: no barrier before the next stage)' \
  TestGPUExpandMatMul
m_order[lora-expand-stage-overwritten]=shuffle

# The tensor-core attention forward refills a K/V buffer while other warps
# still read it.
mutation attention-tc-buffer-refilled kernels/attention_tc.cu \
  $'    tc_accumulate<D, TC_BK>(o, s, Vt, lane);\n    __syncthreads();  // every warp is done with this buffer before it is refilled' \
  $'    tc_accumulate<D, TC_BK>(o, s, Vt, lane);  // (mutation: no barrier before the refill)' \
  TestGPUAttentionTC
m_order[attention-tc-buffer-refilled]=shuffle

# The tensor-core k-means assignment loads step s + 1 into a stage other
# warps still read.
mutation kmeans-tc-stage-overwritten kernels/kmeans.cu \
  '      __syncthreads();  // this stage is read before step s + 1 loads into it' \
  '      // (mutation: no barrier before step s + 1 loads into this stage)' \
  TestGPUKMeansAssign
m_order[kmeans-tc-stage-overwritten]=shuffle

# Under GQA, the sum of the query heads' dK and dV shares leaves out the
# group's last head.
mutation attention-gqa-sum-short kernels/attention_tc.cu \
  '    for (int j = 0; j < group; j++) {' \
  '    for (int j = 0; j < group - 1; j++) {  // (mutation: the last head left out)' \
  TestGPUAttentionTC

# The dk/dv kernel stores the next step's lse, delta and document starts
# into the buffer this step reads: the next step finds the previous one's.
mutation attention-dkdv-stats-wrong-buffer kernels/attention_tc.cu \
  '    int t = k0 + (st % ntiles) * TC_BQB + tid, buf = st & 1;' \
  '    int t = k0 + (st % ntiles) * TC_BQB + tid, buf = (st + 1) & 1;  // (mutation)' \
  TestGPUAttentionTC

# attention_dkdv_sum's 32-bit group index splits it into row and column
# with the column's remainder taken as the row's: dk and dv of the wrong
# feature groups, under GQA when one query head per block writes shares.
mutation attention-dkdv-sum-column kernels/attention_tc.cu \
  '    unsigned row = i / per_row, c = i - row * per_row;' \
  '    unsigned row = i / per_row, c = row % per_row;  // (mutation)' \
  TestGPUAttentionTC

# tc_load_rows, where a row's chunks do not divide the block (D = 96),
# carries to the row after next when its column wraps: rows not copied.
# (Wrapping with no carry at all copies every chunk, some twice: slower,
# not wrong.)
mutation attention-tc-rows-carry-two kernels/attention_tc.cu \
  '      if (c >= chunks) c -= chunks, r++;
    }
  }
}

// tc_key_tiles' \
  '      if (c >= chunks) c -= chunks, r += 2;  // (mutation)
    }
  }
}

// tc_key_tiles' \
  TestGPUAttentionTC

# attention_tc_backward_dq_ds reads the dS tiles' entries no query sees
# unmasked: the ones the dk/dv kernel left unwritten are the scratch's
# NaN poison (PoisonEmpty), and the rows past a document's start read
# another document's dS.
mutation attention-ds-unmasked kernels/attention_tc.cu \
  '      if (masked) {
        // x[i]: row row[i & 1]' \
  '      if (false) {  // (mutation: stale entries read)
        // x[i]: row row[i & 1]' \
  TestGPUAttentionTC

# The dk/dv kernel writes its dS^T rows for key g + 8 at key g + 9.
mutation attention-ds-row-off kernels/attention_tc.cu \
  '        *(uint32_t*)(at + 8 * TC_BQ + 8 * j) = pack_bf16_rn(ds[j].x[2], ds[j].x[3]);' \
  '        *(uint32_t*)(at + 9 * TC_BQ + 8 * j) = pack_bf16_rn(ds[j].x[2], ds[j].x[3]);  // (mutation)' \
  TestGPUAttentionTC

# attention_tc_backward_dq_ds refills its dS and K buffers while other
# warps still read them.
mutation attention-ds-buffer-refilled kernels/attention_tc.cu \
  '    __syncthreads();  // every warp is done with these tiles before the next load refills them' \
  '    // (mutation: no barrier before the refill)' \
  TestGPUAttentionTC
m_order[attention-ds-buffer-refilled]=shuffle

# zero_tensors' 16-byte stores stop one group short of each tensor's end.
mutation zero-tensors-last-group kernels/elementwise.cu \
  'for (size_t i = grid_start(); i < n / 16; i += grid_stride())' \
  'for (size_t i = grid_start(); i + 1 < n / 16; i += grid_stride())' \
  TestGPUZeroTensors

# The tensor-core attention's P rounded to bf16 by truncation instead of
# to nearest as the operand of P V (and of the backward's products). Every
# P loses half a step on average: out about 2e-3 low, within the
# elementwise bf16 bound against the CPU's float32 attention; caught by
# the comparison with the kernels' arithmetic (tcAttention).
mutation attention-p-truncated kernels/attention_tc.cu \
  '// tc_accumulate adds P B' \
  $'#define pack_bf16_rn(lo, hi) ((__float_as_uint(lo) >> 16) | (__float_as_uint(hi) & 0xffff0000u))  // (mutation)\n// tc_accumulate adds P B' \
  TestGPUAttentionTCPeaked

# ce_chunk_update's bf16 P (the operand of the bf16 lm_head's product)
# rounded by truncation: within TestGPUCrossEntropy's bf16 bounds; not the
# bits of the float32 P rounded, which the cast it replaced gave.
mutation ce-p-bf16-truncated kernels/cross_entropy.cu \
  '    if (p) store_f32(p, p_dt, p0 + j, e);' \
  '    if (p) store_f32(p, p_dt, p0 + j, p_dt == DT_BF16 ? __uint_as_float(__float_as_uint(e) & 0xffff0000u) : e);' \
  TestGPUCrossEntropyChunkP

# attention_backward_delta writes dout's bf16 copy but sums the float32
# values: D no longer matches the dP the kernels compute from the copy.
mutation delta-cast-unrounded kernels/attention.cu \
  '        g = load_f32(cast, cast_dt, i);  // its own store: the rounded value' \
  '        // (mutation) g = load_f32(cast, cast_dt, i);' \
  TestGPUAttentionRounded

# The GPU suite's measurements not checking the context: an interrupt
# lets the running group run to its end (past the SIGKILL that follows a
# time limit's SIGTERM on a lent machine).
mutation gpu-bench-ignores-interrupt cgo/gpubench.go \
  $'float64 {\n\tg.stopIfDone()' \
  $'float64 { // (mutation: no check)' \
  TestGPUBenchInterrupted

# -c: only check that every mutation's text is in its file once (make check).
if [ "${1:-}" = "-c" ]; then
  args=()
  for n in "${names[@]}"; do
    args+=("$n" "${m_file[$n]}" "${m_old[$n]}")
    if [ -n "${extra_file[$n]:-}" ]; then args+=("$n (second edit)" "${extra_file[$n]}" "${extra_old[$n]}"); fi
  done
  cd "$root" && exec python3 scripts/mutation_texts.py "${args[@]}"
fi
if [ "${1:-}" = "-l" ]; then
  printf '%s\n' "${names[@]}"
  exit 0
fi
selected=("$@")
[ ${#selected[@]} -eq 0 ] && selected=("${names[@]}")
for n in "${selected[@]}"; do
  [ -n "${m_file[$n]:-}" ] || { echo "unknown mutation $n (-l lists them)" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$root" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$work" 2>/dev/null || true)
cd "$work"
mkdir -p bin
# build_emu builds the emulated device from the copy's kernel sources.
build_emu() {
  echo "building the emulated device..."
  make -B -s bin/libcompass_emu.so  # the Makefile's flags, the alignment sanitizer among them
}
build_emu
export COMPASS_CUDA_EMULATOR="$work/bin/libcompass_emu.so" OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
# A mutation of a kernel's source is in the device, not in the Go test
# binary: the device is rebuilt with it, and again once it is undone.
kernel_source() { case $1 in kernels/*.cu | kernels/*.cuh | kernels/emu/*) return 0 ;; esac; return 1; }
emu_stale=0

# run TEST [ORDER]: 0 when it passes, 1 when it fails (a failed check, or
# a fault the emulated device reports and ends the process with), 2 when it
# does not build. ORDER is the emulated device's warp order.
run() {
  local out
  out=$(COMPASS_EMU_WARP_ORDER=${2:-} "$go" test -tags cuda -count=1 -run "^$1\$" ./cgo/ 2>&1) && return 0
  if grep -q -e '\[build failed\]' -e '\[setup failed\]' <<<"$out"; then
    echo "$out" | tail -5 >&2
    return 2
  fi
  # What caught it: the emulator's report, or the test's first error.
  grep -E -- "cuda emulator: |_test\.go:[0-9]+: .*(error|cuda)" <<<"$out" | grep -v "(tolerance" | head -2 | cut -c1-240 | sed 's/^ */          /'
  return 1
}

# replace FILE OLD NEW: exactly one occurrence, else STALE.
replace() {
  python3 - "$1" "$2" "$3" <<'EOF'
import sys
path, old, new = sys.argv[1:4]
s = open(path).read()
if s.count(old) != 1:
    sys.exit(1)
open(path, "w").write(s.replace(old, new))
EOF
}

declare -A passed
failed=0
for n in "${selected[@]}"; do
  t=${m_test[$n]}
  o=${m_order[$n]:-}
  if [ "$emu_stale" = 1 ]; then
    build_emu
    emu_stale=0
  fi
  if [ -z "${passed[$t/$o]:-}" ]; then
    if ! run "$t" "$o"; then
      echo "BASELINE FAILS  $t${o:+ (warp order $o)}: fix it first"
      exit 1
    fi
    passed[$t/$o]=1
  fi
  f=${m_file[$n]}
  cp "$f" "$f.orig"
  ef=${extra_file[$n]:-}
  [ -n "$ef" ] && cp "$ef" "$ef.orig"
  if ! replace "$f" "${m_old[$n]}" "${m_new[$n]}" || { [ -n "$ef" ] && ! replace "$ef" "${extra_old[$n]}" "${extra_new[$n]}"; }; then
    echo "STALE     $n: its text is no longer in the source"
    failed=1
  else
    if kernel_source "$f"; then
      build_emu
      emu_stale=1
    fi
    set +e
    run "$t" "$o"
    r=$?
    set -e
    case $r in
      1) echo "caught    $n ($t fails${o:+, warp order $o})" ;;
      0) echo "MISSED    $n ($t passes${o:+, warp order $o})"; failed=1 ;;
      *) echo "BROKEN    $n (does not build)"; failed=1 ;;
    esac
  fi
  mv "$f.orig" "$f"
  [ -n "$ef" ] && mv "$ef.orig" "$ef"
done
exit $failed
