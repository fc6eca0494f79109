// selftest.cpp: checks the kernel emulator's own primitives (cuda_emu.h)
// against what CUDA documents: shuffles of each kind and width, 64-bit
// shuffles, votes, atomics, barriers, the poisoning of dynamic shared
// memory, thread indices, the bf16/half types, and the warps in turn
// (COMPASS_EMU_WARP_ORDER): each order runs the warps as it says, and the
// blocks in reverse (COMPASS_EMU_BLOCK_ORDER). The kernels themselves are
// checked through the GPU backend on the emulated device (device.cpp, cgo's
// GPU tests); these primitives are what that rests on. kernels/emu_test.go
// builds and runs it:
//
//	g++ -O2 -fopenmp -std=c++17 -ffp-contract=off -o selftest emu/selftest.cpp
//
// It prints each failed check and exits 1 when any failed.
#include "../common.cuh"

namespace {

// selftest_kernel checks the emulated primitives against what CUDA
// documents; each failed check adds to fails[check] (a 2D block of
// 32 x 4 threads, 2 blocks).
enum {
  kXor,
  kDown,
  kUp,
  kIdx,
  kWide,
  kBallot,
  kAnyAll,
  kAtomics,
  kSync,
  kPoison,
  kIndex,
  kChecks
};
const char* const kCheckNames[kChecks] = {"shfl_xor", "shfl_down", "shfl_up",     "shfl",  "shfl 64-bit", "ballot",
                                          "any/all",  "atomics",   "syncthreads", "poison", "thread index"};

__global__ void selftest_kernel(int* fails, int* counter, float* fsum, int* imax, int* imin, int* cas_winner) {
  DYNAMIC_SHARED(int, dyn);
  __shared__ int s[128];
  int t = threadIdx.x + blockDim.x * threadIdx.y, lane = t & 31;
  auto check = [&](int id, bool ok) {
    if (!ok) atomicAdd(&fails[id], 1);
  };
  check(kIndex, (int)threadIdx.x == lane && (int)threadIdx.y == t / 32 && blockDim.x == 32 && blockDim.y == 4 &&
                    gridDim.x == 2);
  bool poisoned = dyn[t] == -1;  // before anyone writes it
  __syncthreads();
  dyn[t] = t;
  check(kPoison, poisoned);

  int base = 100 * (int)blockIdx.x;
  check(kXor, __shfl_xor_sync(0xffffffffu, base + lane, 5) == base + (lane ^ 5));
  // width 8: lanes whose source is past their group of 8 keep their value
  int down = __shfl_down_sync(0xffffffffu, base + lane, 3, 8);
  check(kDown, down == base + ((lane & 7) + 3 < 8 ? lane + 3 : lane));
  int up = __shfl_up_sync(0xffffffffu, base + lane, 5, 16);
  check(kUp, up == base + ((lane & 15) >= 5 ? lane - 5 : lane));
  int idx = __shfl_sync(0xffffffffu, base + lane, 7, 4);  // lane 7 % 4 = 3 of each group of 4
  check(kIdx, idx == base + (lane & ~3) + 3);
  double wide = __shfl_xor_sync(0xffffffffu, (double)lane * 1e10 + 0.5, 31);
  check(kWide, wide == (double)(lane ^ 31) * 1e10 + 0.5);

  unsigned ballot = __ballot_sync(0xffffffffu, lane % 3 == 0);
  unsigned want = 0;
  for (int l = 0; l < 32; l += 3) want |= 1u << l;
  check(kBallot, ballot == want);
  check(kAnyAll, __any_sync(0xffffffffu, lane == 17) && !__any_sync(0xffffffffu, 0) &&
                     __all_sync(0xffffffffu, 1) && !__all_sync(0xffffffffu, lane != 4));

  atomicAdd(counter, 1);
  atomicAdd(fsum, 0.5f);
  atomicMax(imax, t * 7 % 128);
  atomicMin(imin, 1000 - t);
  atomicCAS(cas_winner, -1, t);  // one thread wins; the host checks the winner is a thread

  s[t] = t * 3;
  __syncthreads();
  check(kSync, s[(t + 1) % 128] == ((t + 1) % 128) * 3 && dyn[(t + 5) % 128] == (t + 5) % 128);
  __syncthreads();
}

// turns_kernel: each warp reads the slot the next warp writes, with no
// barrier between (the bug the warps in turn expose: stale[w] counts the
// threads of warp w that read the value from before), and its lane 0 takes
// a rank at each of kStretches stretches between barriers (rank[s * 4 + w]:
// the order the warps ran in). One block of 4 warps.
constexpr int kStretches = 8;
__global__ void turns_kernel(int* stale, int* rank) {
  __shared__ int s[128];
  __shared__ int next;
  int t = threadIdx.x, w = t / 32;
  s[t] = -1;
  if (t == 0) next = 0;
  __syncthreads();
  s[t] = t;
  if (s[(t + 32) % 128] != (t + 32) % 128) atomicAdd(&stale[w], 1);  // no barrier: a race
  __syncthreads();
  for (int i = 0; i < kStretches; i++) {
    if (__shfl_sync(0xffffffffu, t, 0) == 32 * w && t % 32 == 0) rank[i * 4 + w] = atomicAdd(&next, 1) % 4;
    __syncthreads();
  }
}

// check_turns runs turns_kernel with the warps in each order and checks
// what each order must show; 0 when all did.
int check_turns() {
  int failed = 0;
  for (const char* order : {"forward", "reverse", "shuffle"}) {
    setenv("COMPASS_EMU_WARP_ORDER", order, 1);
    int stale[4] = {}, rank[kStretches * 4];
    launch(turns_kernel, dim3(1), dim3(128), 0, stale, rank);
    // Warp w reads stale values exactly when warp w + 1 (mod 4) runs after it.
    bool ranks_ok = true, identity = true;
    int stale_warps = 0;
    for (int i = 0; i < kStretches; i++) {
      int seen = 0;
      for (int w = 0; w < 4; w++) {
        int r = rank[i * 4 + w];
        seen |= 1 << r;
        identity = identity && r == w;
        if (strcmp(order, "forward") == 0 && r != w) ranks_ok = false;
        if (strcmp(order, "reverse") == 0 && r != 3 - w) ranks_ok = false;
      }
      if (seen != 15) ranks_ok = false;  // each stretch runs each warp once
    }
    for (int w = 0; w < 4; w++) {
      if (stale[w] != 0 && stale[w] != 32) ranks_ok = false;  // a warp runs as a whole
      stale_warps += stale[w] / 32;
    }
    bool ok = ranks_ok && (strcmp(order, "forward") != 0 || stale_warps == 3) &&
              (strcmp(order, "reverse") != 0 || stale_warps == 1) &&
              (strcmp(order, "shuffle") != 0 || (stale_warps >= 1 && stale_warps <= 3 && !identity));
    if (!ok) {
      fprintf(stderr, "selftest: warps in turn (%s): %d warps read stale values, ranks %s\n", order, stale_warps,
              ranks_ok ? "as the order says" : "out of order");
      failed = 1;
    }
  }
  unsetenv("COMPASS_EMU_WARP_ORDER");
  return failed;
}

// order_kernel records the order the blocks of a grid ran in: rank[b] for
// the linear block index b (x fastest).
__global__ void order_kernel(int* next, int* rank) {
  int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  if (threadIdx.x == 0) rank[b] = atomicAdd(next, 1);
  __syncthreads();
}

// thread_order_kernel records the order the threads of a grid ran in:
// rank[i] for the linear thread index i (block by block, x fastest).
__global__ void thread_order_kernel(int* next, int* rank) {
  int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  rank[b * blockDim.x + threadIdx.x] = atomicAdd(next, 1);
}

// check_block_order runs order_kernel on a 3 x 2 x 2 grid in each block
// order (COMPASS_EMU_BLOCK_ORDER) and checks that the blocks ran as it
// says, each once; then thread_order_kernel the same way through
// launch_independent, on one OpenMP thread, where the order is the
// threads' (on more, each takes a run of them); 0 when they did.
int check_block_order() {
  int failed = 0;
  constexpr int n = 12;
  for (const char* order : {"", "forward", "reverse"}) {
    setenv("COMPASS_EMU_BLOCK_ORDER", order, 1);
    int next = 0, rank[n];
    for (int& r : rank) r = -1;
    launch(order_kernel, dim3(3, 2, 2), dim3(32), 0, &next, rank);
    bool reversed = strcmp(order, "reverse") == 0;
    for (int b = 0; b < n; b++) {
      if (rank[b] != (reversed ? n - 1 - b : b)) {
        fprintf(stderr, "selftest: blocks in order \"%s\": block %d ran %dth\n", order, b, rank[b]);
        failed = 1;
        break;
      }
    }
    constexpr int per_block = 2, threads = n * per_block;
    int tnext = 0, trank[threads];
    for (int& r : trank) r = -1;
    int omp_threads = omp_get_max_threads();
    omp_set_num_threads(1);
    launch_independent(thread_order_kernel, dim3(3, 2, 2), dim3(per_block), &tnext, trank);
    omp_set_num_threads(omp_threads);
    for (int i = 0; i < threads; i++) {
      if (trank[i] != (reversed ? threads - 1 - i : i)) {
        fprintf(stderr, "selftest: independent threads in order \"%s\": thread %d ran %dth\n", order, i, trank[i]);
        failed = 1;
        break;
      }
    }
  }
  unsetenv("COMPASS_EMU_BLOCK_ORDER");
  return failed;
}

int run_selftest() {
  int fails[kChecks] = {};
  int counter = 0, imax = -1, imin = 1 << 30, cas_winner = -1;
  float fsum = 0.0f;
  // The primitives with all warps at once, then with the warps in turn
  // (where shuffles, votes and barriers go another way).
  for (const char* order : {"", "forward", "reverse", "shuffle"}) {
    setenv("COMPASS_EMU_WARP_ORDER", order, 1);
    launch(selftest_kernel, dim3(2), dim3(32, 4), 128 * sizeof(int), fails, &counter, &fsum, &imax, &imin,
           &cas_winner);
  }
  unsetenv("COMPASS_EMU_WARP_ORDER");
  if (counter != 4 * 256 || fsum != 4 * 128.0f || imax != 127 || imin != 1000 - 127 || cas_winner < 0 ||
      cas_winner >= 128)
    fails[kAtomics]++;
  // The bf16 and half types convert as cuda_bf16.h and cuda_fp16.h: nearest
  // even, canonical NaN.
  bool types = __bfloat16_as_ushort(__float2bfloat16(1.00390625f)) == 0x3f80 &&  // tie to even: down
               __bfloat16_as_ushort(__float2bfloat16(1.01171875f)) == 0x3f82 &&  // tie to even: up
               __bfloat16_as_ushort(__float2bfloat16(__uint_as_float(0x7fc12345u))) == 0x7fff &&
               __bfloat162float(__ushort_as_bfloat16(0xc0a0)) == -5.0f &&
               __half_as_ushort(__float2half(65504.0f)) == 0x7bff && __half_as_ushort(__float2half(65520.0f)) == 0x7c00 &&
               __half2float(__ushort_as_half(0x0001)) == 5.9604644775390625e-8f &&
               __half_as_ushort(__float2half(__uint_as_float(0x7f800001u))) == 0x7fff;
  int failed = 0;
  for (int i = 0; i < kChecks; i++) {
    if (fails[i] != 0) {
      fprintf(stderr, "selftest: %s failed (%d threads)\n", kCheckNames[i], fails[i]);
      failed = 1;
    }
  }
  if (!types) {
    fprintf(stderr, "selftest: bf16/half conversions failed\n");
    failed = 1;
  }
  return failed | check_turns() | check_block_order();
}

}  // namespace

int main() { return run_selftest(); }
