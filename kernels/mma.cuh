// mma.cuh: the tensor-core product D = A B + C for one 16x8x16 tile per
// warp (mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: bf16
// operands, float32 accumulate) and the loads of its fragments from shared
// memory.
//
// Fragment layouts, from the PTX ISA, section "Matrix Fragments for
// mma.m16n8k16 with floating point type" (9.7.14.5.8 in PTX ISA 8.x;
// https://docs.nvidia.com/cuda/parallel-thread-execution/index.html#warp-level-matrix-fragment-mma-16816-float).
// With groupID = laneid >> 2 and tig = laneid % 4 (threadID_in_group):
//
//	A (16x16, row): a0..a7 in four .b32 registers, two bf16 each, low half
//	    first (a0 low of reg 0, a1 high of reg 0, ...):
//	    row = groupID     for a0, a1, a4, a5;  groupID + 8 for a2, a3, a6, a7
//	    col = tig*2 + (i & 1)  for i < 4;       tig*2 + (i & 1) + 8 for i >= 4
//	B (16x8, col): b0..b3 in two .b32 registers:
//	    row = tig*2 + (i & 1)  for i < 2;       tig*2 + (i & 1) + 8 for i >= 2
//	    col = groupID
//	C, D (16x8, f32): c0..c3:
//	    row = groupID     for c0, c1;           groupID + 8 for c2, c3
//	    col = tig*2 + (i & 1)
//
// Tiles in shared memory hold bf16 elements, two to a 32-bit fragment
// register, the even depth index k in the low half: A as [row][k] and B as
// [n][k] (B is "col": k runs along a stored row); ldmatrix_x4 (below) loads
// the fragments, or with .trans from tiles stored the other way round.
//
// On the GPU mma_bf16_m16n8k16 is the PTX instruction. Under the emulator it
// gathers the registers of the warp's 32 lanes and decodes them with the
// formulas above, written out independently of the loads: a load that puts
// an element in the wrong register gives a wrong product on the CPU.
#pragma once

#include "common.cuh"

struct FragA {
  uint32_t x[4];
};
struct FragB {
  uint32_t x[2];
};
struct FragC {
  float x[4];
};

// frag_c_row and frag_c_col give the (row, col) of accumulator element i
// of a lane.
__device__ __forceinline__ int frag_c_row(int lane, int i) { return (lane >> 2) + (i >= 2 ? 8 : 0); }
__device__ __forceinline__ int frag_c_col(int lane, int i) { return (lane & 3) * 2 + (i & 1); }

// pack_bf16 packs two float32 values, rounded to bf16 (tensor/convert.go's
// rounding), lo in the low half.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  return (uint32_t)f32_to_bf16(lo) | ((uint32_t)f32_to_bf16(hi) << 16);
}

#ifdef __CUDACC__

// d += a b on the tensor cores. Every lane of the warp must call it.
__device__ __forceinline__ void mma_bf16_m16n8k16(FragC& d, const FragA& a, const FragB& b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d.x[0]), "+f"(d.x[1]), "+f"(d.x[2]), "+f"(d.x[3])
      : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[0]), "r"(b.x[1]));
}

#else  // the emulator

// d += a b, computed from the fragments of all 32 lanes decoded with the PTX
// ISA's layout. Products of bf16 values are exact in float32; the sum runs
// over k in order, in float32 (the hardware's order and internal precision
// may differ in the last bits).
inline void mma_bf16_m16n8k16(FragC& d, const FragA& a, const FragB& b) {
  uint32_t mine[6] = {a.x[0], a.x[1], a.x[2], a.x[3], b.x[0], b.x[1]};
  const uint32_t* warp = emu::warp_exchange(mine, 6);
  float A[16][16], B[16][8];
  for (int lane = 0; lane < 32; lane++) {
    const uint32_t* regs = warp + lane * emu::kSlot;
    int group_id = lane >> 2, tig = lane % 4;
    for (int i = 0; i < 8; i++) {  // a_i is half (i & 1) of register i / 2
      uint16_t bits = (uint16_t)(regs[i / 2] >> (16 * (i & 1)));
      int row = (i < 2 || (i >= 4 && i < 6)) ? group_id : group_id + 8;
      int col = i < 4 ? tig * 2 + (i & 0x1) : tig * 2 + (i & 0x1) + 8;
      A[row][col] = bf16_to_f32(bits);
    }
    for (int i = 0; i < 4; i++) {  // b_i is half (i & 1) of register 4 + i / 2
      uint16_t bits = (uint16_t)(regs[4 + i / 2] >> (16 * (i & 1)));
      int row = i < 2 ? tig * 2 + (i & 0x1) : tig * 2 + (i & 0x1) + 8;
      int col = group_id;
      B[row][col] = bf16_to_f32(bits);
    }
  }
  int lane = emu::lane_id(), group_id = lane >> 2, tig = lane % 4;
  for (int i = 0; i < 4; i++) {
    int row = i < 2 ? group_id : group_id + 8;
    int col = tig * 2 + (i & 0x1);
    float sum = d.x[i];
    for (int kk = 0; kk < 16; kk++) sum += A[row][kk] * B[kk][col];
    d.x[i] = sum;
  }
}

#endif  // __CUDACC__

// pack_bf16_rn packs two float32 values rounded to bf16, lo in the low half:
// pack_bf16's rounding for every finite value (on the GPU one cvt
// instruction instead of a dozen integer ones; NaN becomes the canonical
// NaN there, which only matters for inputs that are NaN already).
#ifdef __CUDACC__
__device__ __forceinline__ uint32_t pack_bf16_rn(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
#else
inline uint32_t pack_bf16_rn(float lo, float hi) { return pack_bf16(lo, hi); }
#endif

// exp2_approx is 2^x by one instruction of the GPU's special function
// unit (ex2.approx.ftz.f32: about 2 ulp, as exp2f's, but results below
// 2^-126 are 0); exp2f takes four, to give those subnormal results. For
// the attention kernels' probabilities (2^x with x <= 0, against the
// row's max) such a value is nothing next to the 1 of the max. The
// emulator uses exp2f.
#ifdef __CUDACC__
__device__ __forceinline__ float exp2_approx(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(x));
  return r;
}
#else
inline float exp2_approx(float x) { return exp2f(x); }
#endif

// ldmatrix_x4 loads four 8x8 matrices of 16-bit elements from shared memory,
// the PTX instruction ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16
// (PTX ISA, "Warp-level matrix load instruction: ldmatrix"): lanes 8i to
// 8i+7 give the addresses of the 8 rows of matrix i (16 bytes each, 16-byte
// aligned) and r[i] of lane l receives, with g = l >> 2 and t = l % 4,
//	row g, columns 2t and 2t+1 of matrix i           (ldmatrix_x4)
//	rows 2t and 2t+1, column g of matrix i           (ldmatrix_x4_trans)
// the lower column (row) in the low half: an mma fragment of A or B. Every
// lane of the warp must call it.
//
// cp_async_16 copies 16 bytes from global to shared memory without going
// through registers (cp.async.cg, PTX ISA "cp.async"), or writes 16 zero
// bytes when valid is false (src must still be a valid address);
// cp_async_commit closes a group of copies and cp_async_wait<N>() waits
// until at most N committed groups are still in flight (then a barrier
// makes the other threads' copies visible). Both need sm_80.
#ifdef __CUDACC__

__device__ __forceinline__ uint32_t shared_addr(const void* p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_addr(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_addr(row)));
}
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

#else  // the emulator

// The emulated ldmatrix exchanges the 32 lanes' row addresses, as the
// hardware does, and reads each element from the row its lane is given by
// the formulas above: a wrong address or a wrong register shows as a wrong
// product.
inline void ldmatrix_x4_impl(uint32_t r[4], const void* row, bool trans) {
  uint64_t a = (uint64_t)(uintptr_t)row;
  if (a % 16 != 0) emu::fail("ldmatrix: a row address that is not 16-byte aligned");
  uint32_t mine[2] = {(uint32_t)a, (uint32_t)(a >> 32)};
  const uint32_t* warp = emu::warp_exchange(mine, 2);
  int lane = emu::lane_id(), g = lane >> 2, t = lane & 3;
  for (int i = 0; i < 4; i++) {
    uint32_t v = 0;
    for (int j = 0; j < 2; j++) {
      int src = trans ? 8 * i + 2 * t + j : 8 * i + g;  // the lane whose row holds the element
      int col = trans ? g : 2 * t + j;
      const uint32_t* w = warp + src * emu::kSlot;
      const uint16_t* p = (const uint16_t*)(uintptr_t)((uint64_t)w[0] | ((uint64_t)w[1] << 32));
      v |= (uint32_t)p[col] << (16 * j);
    }
    r[i] = v;
  }
}
inline void ldmatrix_x4(uint32_t r[4], const void* row) { ldmatrix_x4_impl(r, row, false); }
inline void ldmatrix_x4_trans(uint32_t r[4], const void* row) { ldmatrix_x4_impl(r, row, true); }

// The emulated cp.async poisons its 16 bytes (0xff: NaN) at the issue and
// copies them at a cp_async_wait that covers its group: on the GPU they
// may land at any time between the two, so a kernel that reads a tile
// before waiting for it, or that refills a buffer while another warp still
// reads it, reads NaN here.
struct AsyncCopy {
  void* dst;
  const void* src;  // nullptr: zero fill
  long group;
};
inline thread_local std::vector<AsyncCopy> async_pending;
inline thread_local long async_committed;  // groups committed so far

inline void cp_async_16(void* dst, const void* src, bool valid) {
  if ((uintptr_t)dst % 16 != 0 || (uintptr_t)src % 16 != 0) emu::fail("cp.async: an address that is not 16-byte aligned");
  memset(dst, 0xff, 16);
  async_pending.push_back({dst, valid ? src : nullptr, async_committed});
}
inline void cp_async_commit() { async_committed++; }
template <int N>
inline void cp_async_wait() {
  // Groups numbered below async_committed - N are complete after the wait.
  std::vector<AsyncCopy> rest;
  for (const AsyncCopy& c : async_pending) {
    if (c.group < async_committed - N) {
      if (c.src != nullptr) {
        memcpy(c.dst, c.src, 16);
      } else {
        memset(c.dst, 0, 16);
      }
    } else {
      rest.push_back(c);
    }
  }
  async_pending.swap(rest);
}

#endif  // __CUDACC__

// ldmatrix_frag_a loads the A fragment of the 16x16 bf16 tile at s (row
// major, ld elements per row, rows 16-byte aligned): matrices rows 0-7 and
// 8-15 at columns 0-7, then at columns 8-15.
__device__ __forceinline__ void ldmatrix_frag_a(FragA& a, const uint16_t* s, int ld, int lane) {
  ldmatrix_x4(a.x, s + (lane & 15) * ld + (lane >> 4) * 8);
}

// ldmatrix_frag_a_trans loads the A fragment of the 16x16 bf16 tile whose
// transpose is stored at s ([k][m], row major, ld elements per k, rows
// 16-byte aligned): matrices (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7,
// k 8-15), (m 8-15, k 8-15), each read from 8 stored rows and transposed.
__device__ __forceinline__ void ldmatrix_frag_a_trans(FragA& a, const uint16_t* s, int ld, int lane) {
  ldmatrix_x4_trans(a.x, s + ((lane & 7) + (lane >> 4) * 8) * ld + ((lane >> 3) & 1) * 8);
}

// ldmatrix_frag_b2 loads the B fragments of two 16(k) x 8(n) tiles stored
// [n][k] (row major, ld elements per n) from the 16 rows at s: b0 for rows
// 0-7, b1 for rows 8-15 (matrices rows 0-7 at k 0-7 and 8-15, then rows
// 8-15).
__device__ __forceinline__ void ldmatrix_frag_b2(FragB& b0, FragB& b1, const uint16_t* s, int ld, int lane) {
  uint32_t r[4];
  ldmatrix_x4(r, s + ((lane & 7) + (lane >> 4) * 8) * ld + ((lane >> 3) & 1) * 8);
  b0.x[0] = r[0];
  b0.x[1] = r[1];
  b1.x[0] = r[2];
  b1.x[1] = r[3];
}
