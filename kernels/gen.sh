#!/usr/bin/env bash
# gen.sh: generates kernels/ptx/ from kernels/*.cu with nvcc (`make kernels`)
# and fails if ptxas reports a register spill in any kernel.
#
#	bash kernels/gen.sh [OUTDIR]     (default kernels/ptx)
#
# For each source and each of compute_80 and compute_90 it runs
#	nvcc -ptx -arch=compute_XX -O3 -std=c++17 -lineinfo SRC.cu -o OUTDIR/SRC_smXX.ptx
# then `ptxas -v -arch=sm_XX` on the result and prints each kernel's
# registers, stack frame and spills. --use_fast_math is not used: it would
# make expf/logf/sqrtf/division approximate and flush float32 subnormals to
# zero, so that the kernels would no longer compute what the CPU backend
# (and the emulator) compute: AdamW would not match bit for bit, nor would
# the float16 and bfloat16 conversions of subnormals. -lineinfo keeps
# source lines for profilers and compute-sanitizer at no cost in code.
#
# The output must be the same wherever the repository is checked out
# (kernels/check_ptx_test.go regenerates it and compares), but nvcc puts
# the source's absolute path into the PTX, both as the file name and as a
# hash inside the names of internal symbols (_INTERNAL_<hash>_...). So the
# sources are copied to a fixed staging directory and compiled there, and
# that path is then replaced with "kernels/".
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/ptx}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
stage=/tmp/compass-kernels-src
rm -rf "$stage"
mkdir -p "$stage"
cp -r "$here"/*.cu "$here"/*.cuh "$here"/emu "$stage"/
cd "$stage"

command -v nvcc >/dev/null || { echo "gen.sh: nvcc not found (Debian: apt-get install nvidia-cuda-toolkit, from non-free)" >&2; exit 1; }
sources=(adamw attention attention_kv attention_tc cross_entropy dropout elementwise embedding kmeans layernorm lora rmsnorm rope swiglu)

# nvcc, all sources and architectures at once (each is one process).
pids=()
for src in "${sources[@]}"; do
  for arch in 80 90; do
    ptx="$out/${src}_sm${arch}.ptx"
    (nvcc -ptx -arch="compute_${arch}" -O3 -std=c++17 -lineinfo "$src.cu" -o "$ptx.tmp" &&
      sed "s|\"$stage/|\"kernels/|" "$ptx.tmp" > "$ptx" && rm -f "$ptx.tmp") &
    pids+=($!)
  done
done
failed=0
for pid in "${pids[@]}"; do
  wait "$pid" || failed=1
done
[ "$failed" = 0 ] || { echo "gen.sh: nvcc failed" >&2; exit 1; }

# ptxas: the resources of each kernel; any spill fails.
spilled=0
for src in "${sources[@]}"; do
  for arch in 80 90; do
    ptx="$out/${src}_sm${arch}.ptx"
    report="$(ptxas -v -arch="sm_${arch}" "$ptx" -o /dev/null 2>&1)" ||
      { echo "gen.sh: ptxas failed on ${src}_sm${arch}.ptx (exit $?):" >&2; echo "$report" >&2; exit 1; }
    # ptxas prints, per kernel: "Compiling entry function 'NAME' for 'sm_XX'",
    # then "N bytes stack frame, N bytes spill stores, N bytes spill loads",
    # then "Used N registers, ...".
    echo "$report" | awk -v arch="sm_$arch" '
      /Compiling entry function/ { match($0, /'"'"'[^'"'"']*'"'"'/); name = substr($0, RSTART + 1, RLENGTH - 2) }
      /bytes stack frame/ { sub(/^ */, ""); frame = $0 }
      /Used [0-9]+ registers/ { sub(/.*info *: */, ""); printf "%-26s %-6s %s; %s\n", name, arch, $0, frame }'
    if echo "$report" | grep -Eq '[1-9][0-9]* bytes spill (stores|loads)'; then
      echo "gen.sh: $src.cu spills registers on sm_$arch:" >&2
      echo "$report" | grep -E 'Compiling|spill' >&2
      spilled=1
    fi
  done
done
exit "$spilled"
