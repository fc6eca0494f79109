#!/usr/bin/env bash
# gpu-emu-test.sh: runs the GPU tests of cgo/ (go test -tags cuda) against
# the emulated device (`make emu`, kernels/emu/device.cpp), and says how
# many ran. `make test` runs it.
#
#	scripts/gpu-emu-test.sh [--warp-turns] [LIBRARY] [go test flags...]
#
# --warp-turns runs the tests of the kernels with a barrier of the block
# (__syncthreads) with the emulated device's warps taking turns between
# barriers in a shuffled order (COMPASS_EMU_WARP_ORDER=shuffle, see
# kernels/emu/cuda_emu.h): a missing barrier then reads the wrong values.
# Its blocks run from the last (COMPASS_EMU_BLOCK_ORDER=reverse), where the
# other run goes in blockIdx order: a block that reads what another block
# of the launch writes reads the wrong values in one of the two. That run
# fails unless it launched every kernel with a barrier. `make test` runs
# the script both ways.
#
# LIBRARY defaults to bin/libcompass_emu.so. It is used through a copy
# named by its content hash, so that go test's cache (which sees the
# COMPASS_CUDA_EMULATOR it reads, not the library) reruns the tests when
# the library changes.
#
# Then (not with --warp-turns) it runs BenchmarkGPUKernels and
# BenchmarkGPULoRA once per case at the suite's small sizes, and bench's
# GPU test (compass bench's side of the suite).
#
# Fails when a test fails, when no GPU test ran, when one skipped for lack
# of a device, or when a run of every test did not launch every kernel of
# kernels.Table (cgo's TestMain checks the emulated device's launch log).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
turns=()
if [ "${1:-}" = "--warp-turns" ]; then
  shift
  export COMPASS_EMU_WARP_ORDER=shuffle COMPASS_EMU_BLOCK_ORDER=reverse COMPASS_EMU_LAUNCH_CHECK=barriers
  # Between them these launch every kernel whose PTX has a barrier (cgo's
  # TestMain checks).
  turns=(-run '^TestGPU(RMSNorm|LayerNorm|CrossEntropy|Attention|BidirectionalAttention|AttentionTC|AttentionKV|NarrowMatMul|GradMatMul|ExpandMatMul|LoRABF16Input|KMeansAssign|KMeansUpdate)$')
fi
lib=${1:-bin/libcompass_emu.so}
shift || true
if [ ! -f "$lib" ]; then
  echo "gpu-emu-test: $lib not found: run make emu" >&2
  exit 2
fi
hash=$(sha256sum "$lib" | cut -c1-16)
mkdir -p bin/emu
named="$root/bin/emu/libcompass_emu-$hash.so"
if [ ! -f "$named" ]; then
  rm -f bin/emu/libcompass_emu-*.so # older builds
  cp "$lib" "$named"
fi

# Hundreds of OpenMP threads share the CPUs: waiting ones should sleep.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
COMPASS_CUDA_EMULATOR="$named" ${GO:-go} test -tags cuda -timeout 40m -v "${turns[@]}" "$@" ./cgo/ >"$log" 2>&1 || status=$?

# One line per GPU test, then the package's result and any fault the
# emulated device reported (the failures' details are in the tail below).
grep -E '^--- (PASS|FAIL|SKIP): TestGPU|^(FAIL|ok|panic)|cuda emulator: CUDA_ERROR|^kernels launched|^no GPU test launched' "$log" | head -200 || true
passed=$(grep -cE '^--- PASS: TestGPU' "$log" || true)
failed=$(grep -cE '^--- FAIL: TestGPU' "$log" || true)
skipped=$(grep -cE '^--- SKIP: TestGPU' "$log" || true)
echo "GPU tests on the emulated device${COMPASS_EMU_WARP_ORDER:+ (warps in turn, $COMPASS_EMU_WARP_ORDER)}${COMPASS_EMU_BLOCK_ORDER:+ (blocks $COMPASS_EMU_BLOCK_ORDER)}: $((passed + failed)) ran ($passed passed, $failed failed), $skipped skipped"
if [ "$status" -ne 0 ]; then
  echo "gpu-emu-test: go test failed (exit $status); the last lines:" >&2
  grep -E -B2 -A12 '^--- FAIL|^panic' "$log" | head -150 >&2 || true
  tail -20 "$log" >&2
  exit 1
fi
if [ $((passed + failed)) -eq 0 ]; then
  echo "gpu-emu-test: no GPU test ran" >&2
  exit 1
fi
if grep -A2 -E '^--- SKIP: TestGPU' "$log" | grep -q 'no CUDA device'; then
  echo "gpu-emu-test: a GPU test skipped for lack of a device: the emulator did not load" >&2
  exit 1
fi

# The go test benchmarks of the kernels and the LoRA products
# (BenchmarkGPUKernels, BenchmarkGPULoRA), once each at the suite's small
# sizes: they share the suite's cases, and this checks that the benchmarks
# themselves run (about a minute). Not in the warp-turn pass.
if [ ${#turns[@]} -eq 0 ]; then
  if ! COMPASS_CUDA_EMULATOR="$named" ${GO:-go} test -tags cuda -run '^$' -bench '^BenchmarkGPU(Kernels|LoRA)$' -benchtime 1x -short ./cgo/ >"$log" 2>&1; then
    echo "gpu-emu-test: BenchmarkGPUKernels or BenchmarkGPULoRA failed; the last lines:" >&2
    tail -30 "$log" >&2
    exit 1
  fi
  echo "BenchmarkGPUKernels and BenchmarkGPULoRA on the emulated device: $(grep -c '^BenchmarkGPU\(Kernels\|LoRA\)/' "$log") cases ran once"
  # compass bench's side of the suite (bench/gpu.go: groups, results,
  # tables) on one small group, a few seconds.
  if ! COMPASS_CUDA_EMULATOR="$named" ${GO:-go} test -tags cuda -run '^TestGPU' -v ./bench/ >"$log" 2>&1 ||
    ! grep -q '^--- PASS: TestGPUSuiteGroups' "$log"; then
    echo "gpu-emu-test: bench's GPU tests failed or skipped; the last lines:" >&2
    tail -30 "$log" >&2
    exit 1
  fi
  echo "bench's GPU suite (TestGPUSuiteGroups) on the emulated device: passed"
fi
