// cuda_emu.h: the CUDA execution model on the CPU, so that the kernels of
// kernels/*.cu compile as ordinary C++ (g++ -fopenmp) and run, in `go test`,
// on machines without a GPU. Under nvcc it only defines DYNAMIC_SHARED, the
// one construct the two compilers need spelled differently.
//
// How a launch runs (launch() at the bottom):
//   - The blocks of the grid run one after another, in blockIdx order
//     (x fastest), or from the last with COMPASS_EMU_BLOCK_ORDER=reverse.
//   - The threads of a block are OpenMP threads, one per CUDA thread, all
//     running at once; threadIdx, blockIdx, blockDim and gridDim are
//     thread_local. Warp w is threads 32w..32w+31 in linear thread order, as
//     on the GPU; blocks must be whole warps.
//   - __syncthreads() is an OpenMP barrier. __shared__ is `static`: one
//     array per kernel, shared by the block's threads, reused by the next
//     block. Dynamic shared memory (DYNAMIC_SHARED) is one buffer per launch
//     that ends just before a page that faults on any access,
//     filled with 0xff bytes (NaN floats, -1 integers) before each block so
//     that a read of something no thread wrote shows.
//   - Warp shuffles, votes and the tensor-core mma and ldmatrix (mma.cuh)
//     exchange values through a per-block scratch array between two
//     barriers of the whole block. So every thread of the block must reach
//     every shuffle, vote and mma, in the same order, as every thread must
//     reach __syncthreads: the kernels only use them in block-uniform
//     control flow. A launch whose threads passed different numbers of
//     barriers is reported (or hangs, which the Go tests time out).
//   - With COMPASS_EMU_WARP_ORDER=forward, reverse or shuffle, the warps
//     take turns instead: between two __syncthreads one warp runs at a
//     time, in that order, and the exchanges above wait for the warp only
//     (WarpTurns below). A missing __syncthreads then reads stale values.
//   - The Makefile builds this with g++'s alignment sanitizer: a load or
//     store through a 16-byte type (word4, float4) off its boundary, a
//     "misaligned address" fault on the GPU, ends the test with its line.
//   - Atomics are gcc __atomic builtins (a compare-and-swap loop for float
//     add, max and min).
//   - __nv_bfloat16 and __half convert as cuda_bf16.h and cuda_fp16.h do:
//     round to nearest even, NaN to the canonical NaN 0x7fff. (The kernels
//     themselves use common.cuh's conversions, which keep NaN payloads as
//     tensor/convert.go does.)
//   - The fast-math intrinsics (__expf, __logf, __fdividef, rsqrtf) map to
//     the accurate functions: the emulator shows what a kernel computes, not
//     the last bits of the GPU's approximations. Without --use_fast_math
//     (gen.sh) nvcc's expf, logf, sqrtf and '/' are the accurate ones too;
//     g++ runs with -ffp-contract=off, so the emulator never fuses a*b+c
//     where nvcc may (its default --fmad=true).
//
// What this cannot show (kernels/README.md says more): timing, races between
// blocks (they run in sequence), memory-model effects, warp-divergent
// shuffles, bank conflicts, occupancy, register use.
#pragma once

#ifdef __CUDACC__

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

// DYNAMIC_SHARED(T, name) declares the block's dynamic shared memory (the
// launch's shared-bytes argument) as T* name. All kernels of a module name
// the same extern array, as CUDA wants of extern __shared__ arrays.
#define DYNAMIC_SHARED(T, name)                                   \
  extern __shared__ __align__(16) unsigned char dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(dynamic_smem_)

#else  // the emulator

#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
// __restrict__ is already a GNU C++ keyword.

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
// float4: CUDA's 16-byte vector of four floats (one 128-bit load or store).
struct __align__(16) float4 {
  float x, y, z, w;
};
// float2: CUDA's 8-byte vector of two floats (one 64-bit load or store).
struct __align__(8) float2 {
  float x, y;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }
// uint2: CUDA's 8-byte vector of two unsigned ints (one 64-bit load or store).
struct __align__(8) uint2 {
  unsigned x, y;
};
struct uint3 {
  unsigned x, y, z;
};

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;
constexpr int warpSize = 32;

namespace emu {

[[noreturn]] inline void fail(const char* what) {
  fprintf(stderr, "emu: %s\n", what);
  fflush(stderr);
  _Exit(3);
}

// kSlot is how many 32-bit words one thread may publish in one exchange
// (an mma publishes 6).
constexpr int kSlot = 8;

// SharedBuffer is a launch's dynamic shared memory. Its last byte sits just
// before a page that faults on any access, so that a kernel that reads or
// writes past the launch's shared size (exactly, not rounded up) faults.
struct SharedBuffer {
  unsigned char* map = nullptr;
  size_t map_bytes = 0;
  unsigned char* data = nullptr;
  size_t bytes = 0;

  void assign(size_t n) {
    release();
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t body = (n + page - 1) / page * page;
    void* m = mmap(nullptr, body + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) fail("launch: cannot map dynamic shared memory");
    map = static_cast<unsigned char*>(m);
    map_bytes = body + page;
    if (mprotect(map + body, page, PROT_NONE) != 0) fail("launch: cannot protect dynamic shared memory's guard page");
    data = map + body - n;
    bytes = n;
  }
  void release() {
    if (map != nullptr) munmap(map, map_bytes);
    map = data = nullptr;
    map_bytes = bytes = 0;
  }
};

// The state of the block that is running.
struct BlockState {
  int nthreads = 0;
  std::vector<uint32_t> exchange[2];  // nthreads * kSlot words, used alternately
  SharedBuffer dynamic_smem;
  std::vector<long> barriers;  // per thread, at the end of a launch
};
inline BlockState block;
inline thread_local int exchange_phase;
inline thread_local long barrier_count;

inline int linear_tid() {
  return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}
inline int lane_id() { return linear_tid() & 31; }

// Warps in turn (COMPASS_EMU_WARP_ORDER=forward, reverse or shuffle):
// between two __syncthreads the warps of a block run one at a time, each
// until it reaches the barrier: warp 0 first (forward), the last warp first
// (reverse), or in an order drawn afresh for each stretch between barriers
// (shuffle; from a fixed seed, so a run repeats). Shuffles, votes, ldmatrix
// and mma then wait for their own warp only. Each order is a schedule a GPU
// may run. A kernel that lacks a __syncthreads (a warp reads what another
// wrote, or overwrites what another still reads, with no barrier between)
// reads the wrong values when the two warps run the other way round, which
// the default mode, where every exchange is a barrier of the whole block,
// may hide.
struct WarpTurns {
  enum Order { kAtOnce, kForward, kReverse, kShuffle };
  Order order = kAtOnce;
  int nwarps = 0;
  int turn = 0;           // how many warps finished the current stretch
  std::vector<int> perm;  // the current stretch's order of the warps
  uint64_t rng = 0;
  long launches = 0;  // seeds each launch's shuffles
  std::mutex mu;
  std::unique_ptr<std::condition_variable[]> wake;  // one per warp
  std::vector<int> at_barrier;                      // per warp: threads at the stretch's end
  struct alignas(64) Sync {
    int count;       // threads at the warp's current exchange
    int generation;  // exchanges completed
  };
  std::unique_ptr<Sync[]> sync;  // one per warp

  void start(Order order_, int nwarps_) {
    order = order_;
    nwarps = nwarps_;
    turn = 0;
    rng = 0x9e3779b97f4a7c15ull * (uint64_t)++launches;
    wake.reset(new std::condition_variable[nwarps]);
    at_barrier.assign(nwarps, 0);
    sync.reset(new Sync[nwarps]());
    perm.resize(nwarps);
    next_stretch();
  }
  // next_stretch sets the order of the next stretch (turn is 0).
  void next_stretch() {
    for (int k = 0; k < nwarps; k++) perm[k] = order == kReverse ? nwarps - 1 - k : k;
    if (order != kShuffle) return;
    for (int k = nwarps - 1; k > 0; k--) {  // Fisher-Yates with splitmix64
      uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      z ^= z >> 31;
      int j = (int)(z % (uint64_t)(k + 1));
      int t = perm[k];
      perm[k] = perm[j];
      perm[j] = t;
    }
  }
  int warp_at(int k) const { return perm[k]; }
};
inline WarpTurns turns;

// warp_order reads COMPASS_EMU_WARP_ORDER.
inline WarpTurns::Order warp_order() {
  const char* e = getenv("COMPASS_EMU_WARP_ORDER");
  if (e == nullptr || *e == 0) return WarpTurns::kAtOnce;
  if (strcmp(e, "forward") == 0) return WarpTurns::kForward;
  if (strcmp(e, "reverse") == 0) return WarpTurns::kReverse;
  if (strcmp(e, "shuffle") == 0) return WarpTurns::kShuffle;
  fail("COMPASS_EMU_WARP_ORDER must be forward, reverse or shuffle");
}

// blocks_reversed reads COMPASS_EMU_BLOCK_ORDER. Blocks in blockIdx order
// and from the last are both schedules a GPU may run: a kernel whose block
// reads what another block of the same launch writes (a partial sum, a row
// updated in place) without an atomic made for it depends on the order,
// and reads the wrong values in one of the two.
inline bool blocks_reversed() {
  const char* e = getenv("COMPASS_EMU_BLOCK_ORDER");
  if (e == nullptr || *e == 0 || strcmp(e, "forward") == 0) return false;
  if (strcmp(e, "reverse") == 0) return true;
  fail("COMPASS_EMU_BLOCK_ORDER must be forward or reverse");
}

// wait_turn blocks until it is this thread's warp's turn.
inline void wait_turn() {
  int w = linear_tid() >> 5;
  std::unique_lock<std::mutex> l(turns.mu);
  turns.wake[w].wait(l, [&] { return turns.turn < turns.nwarps && turns.warp_at(turns.turn) == w; });
}

// end_turn: the last thread of a warp to reach the end of its stretch hands
// the turn to the next warp; then the block waits until every warp is done
// and starts the next stretch at the first warp of the order.
inline void end_turn() {
  {
    std::lock_guard<std::mutex> l(turns.mu);
    int w = linear_tid() >> 5;
    if (++turns.at_barrier[w] == 32) {
      turns.at_barrier[w] = 0;
      turns.turn++;
      if (turns.turn < turns.nwarps) turns.wake[turns.warp_at(turns.turn)].notify_all();
    }
  }
#pragma omp barrier
  if (linear_tid() == 0) {  // no thread waits for its turn between the two barriers
    turns.turn = 0;
    turns.next_stretch();
  }
#pragma omp barrier
}

// warp_barrier waits for the 32 threads of this thread's warp: a count and
// a generation, the waiting threads asleep on the generation (a futex, as
// OpenMP's barrier does: a mutex would wake them one after another).
inline void warp_barrier() {
  WarpTurns::Sync& s = turns.sync[linear_tid() >> 5];
  int gen = __atomic_load_n(&s.generation, __ATOMIC_ACQUIRE);
  if (__atomic_add_fetch(&s.count, 1, __ATOMIC_ACQ_REL) == 32) {
    __atomic_store_n(&s.count, 0, __ATOMIC_RELAXED);
    __atomic_add_fetch(&s.generation, 1, __ATOMIC_RELEASE);
    syscall(SYS_futex, &s.generation, FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
    return;
  }
  while (__atomic_load_n(&s.generation, __ATOMIC_ACQUIRE) == gen)
    syscall(SYS_futex, &s.generation, FUTEX_WAIT_PRIVATE, gen, nullptr, nullptr, 0);
}

// barrier is __syncthreads.
inline void barrier() {
  barrier_count++;
  if (turns.order == WarpTurns::kAtOnce) {
#pragma omp barrier
    return;
  }
  end_turn();
  wait_turn();
}

// exchange_barrier is the barrier of a shuffle, vote, ldmatrix, mma or
// __syncwarp: the whole block's, or with warps in turn the warp's.
inline void exchange_barrier() {
  if (turns.order == WarpTurns::kAtOnce) {
    barrier();
    return;
  }
  barrier_count++;
  warp_barrier();
}

// warp_exchange publishes this thread's n words and, after a barrier of the
// whole block (of the warp, with warps in turn), returns the slots of its
// warp: lane l's words start at [l * kSlot]. The two buffers alternate: a
// thread can only overwrite the buffer of exchange k at exchange k+2, after
// every thread of its warp passed the barrier of exchange k+1, so after
// they all read exchange k's values.
inline const uint32_t* warp_exchange(const uint32_t* words, int n) {
  int t = linear_tid();
  uint32_t* buf = block.exchange[exchange_phase].data();
  exchange_phase ^= 1;
  memcpy(buf + t * kSlot, words, n * sizeof(uint32_t));
  exchange_barrier();
  return buf + (t & ~31) * kSlot;
}

// Shuffles and votes need every lane: see the header comment.
inline void check_full_mask(unsigned mask) {
  if (mask != 0xffffffffu) fail("a shuffle or vote with a partial mask: the emulator needs every lane of the warp");
}

template <class T>
inline T value_of_lane(T v, int src) {
  static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
  uint32_t w[2] = {0, 0};
  memcpy(w, &v, sizeof(T));
  const uint32_t* warp = warp_exchange(w, 2);
  T r;
  memcpy(&r, warp + src * kSlot, sizeof(T));
  return r;
}

inline void* dynamic_smem() { return block.dynamic_smem.data; }

}  // namespace emu

#define DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(emu::dynamic_smem())

inline void __syncthreads() { emu::barrier(); }
// __syncwarp synchronises the whole block here (with warps in turn, the
// warp): the same rule as shuffles.
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  emu::check_full_mask(mask);
  emu::exchange_barrier();
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// Shuffles, with CUDA's rules for width < 32: lanes are in groups of width;
// a source outside the caller's group gives the caller's own value.
template <class T>
inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = warpSize) {
  emu::check_full_mask(mask);
  int lane = emu::lane_id();
  return emu::value_of_lane(v, (lane & ~(width - 1)) + (src_lane & (width - 1)));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {
  emu::check_full_mask(mask);
  int lane = emu::lane_id();
  int src = lane ^ lane_mask;
  if ((src & ~(width - 1)) > (lane & ~(width - 1))) src = lane;
  return emu::value_of_lane(v, src & 31);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  emu::check_full_mask(mask);
  int lane = emu::lane_id();
  int src = (lane & (width - 1)) + (int)delta < width ? lane + (int)delta : lane;
  return emu::value_of_lane(v, src);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  emu::check_full_mask(mask);
  int lane = emu::lane_id();
  int src = (lane & (width - 1)) >= (int)delta ? lane - (int)delta : lane;
  return emu::value_of_lane(v, src);
}

inline unsigned __ballot_sync(unsigned mask, int pred) {
  emu::check_full_mask(mask);
  uint32_t w = pred != 0;
  const uint32_t* warp = emu::warp_exchange(&w, 1);
  unsigned r = 0;
  for (int l = 0; l < 32; l++) r |= (warp[l * emu::kSlot] & 1u) << l;
  return r;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == 0xffffffffu; }

// Atomics.
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
template <class T, class F>
inline T atomic_update(T* p, F f) {
  T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
  while (!__atomic_compare_exchange_n(p, &old, f(old), false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
  }
  return old;
}
inline float atomicAdd(float* p, float v) {
  uint32_t old = atomic_update(reinterpret_cast<uint32_t*>(p), [v](uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    f += v;
    memcpy(&u, &f, 4);
    return u;
  });
  float f;
  memcpy(&f, &old, 4);
  return f;
}
inline int atomicMax(int* p, int v) { return atomic_update(p, [v](int o) { return o > v ? o : v; }); }
inline unsigned atomicMax(unsigned* p, unsigned v) { return atomic_update(p, [v](unsigned o) { return o > v ? o : v; }); }
inline int atomicMin(int* p, int v) { return atomic_update(p, [v](int o) { return o < v ? o : v; }); }
inline unsigned atomicMin(unsigned* p, unsigned v) { return atomic_update(p, [v](unsigned o) { return o < v ? o : v; }); }
inline int atomicCAS(int* p, int compare, int val) {
  __atomic_compare_exchange_n(p, &compare, val, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return compare;  // the old value, whether or not it was swapped
}
inline unsigned atomicCAS(unsigned* p, unsigned compare, unsigned val) {
  __atomic_compare_exchange_n(p, &compare, val, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return compare;
}
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long compare, unsigned long long val) {
  __atomic_compare_exchange_n(p, &compare, val, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return compare;
}
inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
inline float atomicExch(float* p, float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  u = __atomic_exchange_n(reinterpret_cast<uint32_t*>(p), u, __ATOMIC_SEQ_CST);
  memcpy(&v, &u, 4);
  return v;
}

// Bit casts and integer intrinsics.
inline float __int_as_float(int i) {
  float f;
  memcpy(&f, &i, 4);
  return f;
}
inline float __uint_as_float(unsigned u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
inline int __float_as_int(float f) {
  int i;
  memcpy(&i, &f, 4);
  return i;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  memcpy(&u, &f, 4);
  return u;
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
// __ldcg (a load that skips L1 on a GPU, for data other blocks wrote in
// this launch): a plain load after the fences that order it here.
template <class T>
inline T __ldcg(const T* p) {
  return *p;
}

// Math: the intrinsics are the accurate functions here (see the header).
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }

// CUDA's device min and max.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

// bfloat16 and float16 as cuda_bf16.h and cuda_fp16.h convert them.
struct __nv_bfloat16 {
  uint16_t x;
};
struct __half {
  uint16_t x;
};
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {0x7fff};  // canonical NaN
  return {(uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return __uint_as_float((uint32_t)h.x << 16); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return {u}; }
inline __half __float2half_rn(float f) {
  uint32_t u = __float_as_uint(f);
  uint16_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return {0x7fff};               // canonical NaN
  if (a >= 0x477ff000u) return {(uint16_t)(sign | 0x7c00u)};  // rounds to Inf
  if (a >= 0x38800000u) {                              // normal
    uint32_t v = a - ((127u - 15u) << 23);
    v += 0xfffu + ((v >> 13) & 1u);
    return {(uint16_t)(sign | (v >> 13))};
  }
  if (a < 0x33000000u) return {sign};  // below half the smallest subnormal
  uint32_t e = a >> 23, man = (a & 0x7fffffu) | 0x800000u, shift = 126u - e;
  uint32_t q = man >> shift, rest = man & ((1u << shift) - 1), half = 1u << (shift - 1);
  if (rest > half || (rest == half && (q & 1u))) q++;
  return {(uint16_t)(sign | q)};
}
inline __half __float2half(float f) { return __float2half_rn(f); }
inline float __half2float(__half h) {
  uint32_t sign = (uint32_t)(h.x & 0x8000u) << 16, e = (h.x >> 10) & 0x1fu, man = h.x & 0x3ffu;
  if (e == 0x1f) return __uint_as_float(sign | 0x7f800000u | (man << 13));
  if (e != 0) return __uint_as_float(sign | ((e + 112u) << 23) | (man << 13));
  float f = (float)man * 5.9604644775390625e-8f;  // man * 2^-24, exact
  return sign ? -f : f;
}
inline unsigned short __half_as_ushort(__half h) { return h.x; }
inline __half __ushort_as_half(unsigned short u) { return {u}; }

// launch runs kernel<<<grid, block, shared_bytes>>>(args...) to completion.
template <class... P, class... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t shared_bytes, A... args) {
  static_assert(sizeof...(P) == sizeof...(A), "launch: wrong number of kernel arguments");
  long n = (long)block.x * block.y * block.z;
  if (n <= 0 || n > 1024 || n % 32 != 0) emu::fail("launch: a block must be 32 to 1024 threads, whole warps");
  if (grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.y > 65535 || grid.z > 65535)
    emu::fail("launch: grid dimensions out of range");
  if (shared_bytes > 227 * 1024) emu::fail("launch: more dynamic shared memory than a block can have (227 KiB)");
  emu::BlockState& st = emu::block;
  st.nthreads = (int)n;
  st.exchange[0].assign(n * emu::kSlot, 0);
  st.exchange[1].assign(n * emu::kSlot, 0);
  st.dynamic_smem.assign(shared_bytes);
  memset(st.dynamic_smem.data, 0xff, shared_bytes);
  st.barriers.assign(n, 0);
  emu::turns.start(emu::warp_order(), (int)(n / 32));
  bool in_turn = emu::turns.order != emu::WarpTurns::kAtOnce;
  bool reversed = emu::blocks_reversed();
  long nblocks = (long)grid.x * grid.y * grid.z;
  omp_set_dynamic(0);
#pragma omp parallel num_threads(n)
  {
    if (omp_get_num_threads() != n) emu::fail("launch: OpenMP did not start one thread per CUDA thread");
    int t = omp_get_thread_num();
    blockDim = block;
    gridDim = grid;
    threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
    emu::barrier_count = 0;
    for (long k = 0; k < nblocks; k++) {
      long b = reversed ? nblocks - 1 - k : k;
      blockIdx = {(unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y), (unsigned)(b / ((long)grid.x * grid.y))};
      emu::exchange_phase = 0;
      if (shared_bytes > 0) {
        if (t == 0) memset(st.dynamic_smem.data, 0xff, shared_bytes);
#pragma omp barrier
      }
      if (in_turn) emu::wait_turn();
      kernel(args...);
      if (in_turn) {
        emu::end_turn();
      } else {
#pragma omp barrier
      }
    }
    st.barriers[t] = emu::barrier_count;
  }
  for (long t = 1; t < n; t++) {
    if (st.barriers[t] != st.barriers[0])
      emu::fail("launch: threads passed different numbers of barriers (a __syncthreads, shuffle, vote or mma in divergent code)");
  }
}

// launch_independent runs a launch whose threads never meet: no barrier,
// shuffle, vote, mma or shared memory (the emulated device reads that from
// the kernel's PTX). Any order of its threads is then a schedule the GPU
// could run, so each CUDA thread runs to completion in turn, on as many
// OpenMP threads as there are CPUs: large grid-stride launches take
// milliseconds instead of one barrier of the whole block per block.
template <class... P, class... A>
void launch_independent(void (*kernel)(P...), dim3 grid, dim3 block, A... args) {
  static_assert(sizeof...(P) == sizeof...(A), "launch: wrong number of kernel arguments");
  long per_block = (long)block.x * block.y * block.z;
  long total = (long)grid.x * grid.y * grid.z * per_block;
  bool reversed = emu::blocks_reversed();
#pragma omp parallel
  {
    blockDim = block;
    gridDim = grid;
#pragma omp for schedule(static)
    for (long k = 0; k < total; k++) {
      long i = reversed ? total - 1 - k : k;
      long b = i / per_block, t = i % per_block;
      blockIdx = {(unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y), (unsigned)(b / ((long)grid.x * grid.y))};
      threadIdx = {(unsigned)(t % block.x), (unsigned)(t / block.x % block.y), (unsigned)(t / ((long)block.x * block.y))};
      kernel(args...);
    }
  }
}

#endif  // __CUDACC__
