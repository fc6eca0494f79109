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
# One run at a time uses the staging directory (make kernels while go test
# ./kernels/ regenerates the PTX in another clone, say): the lock is held
# until the script exits.
exec 9>"$stage.lock"
flock 9
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

# ptxas: the resources of each kernel, into a cubin whose SASS cuobjdump
# lists. Per kernel and architecture it prints registers, static shared
# memory, stack frame and spills (ptxas -v), the largest block it was
# compiled for (__launch_bounds__, .maxntid in the PTX: the Table's block,
# except ce_chunk_update and layernorm_forward, bound at 1024 and launched
# at 128), the theoretical occupancy at that block (warps resident per SM
# of 64, from registers, threads and static shared memory; the dynamic
# shared memory the attention kernels take per launch lowers it further:
# kernels/README.md), and the tensor-core instructions in the SASS (HMMA,
# HGMMA) next to the ldmatrix loads (LDSM). Any spill fails, and so does a
# kernel that must run on the tensor cores (attention_tc_*, lora_narrow*, lora_grad*, lora_expand,
# kmeans_assign_tc*) without tensor-core instructions.
sass_dir=$(mktemp -d)
trap 'rm -rf "$sass_dir"' EXIT
spilled=0
no_tc=0
printf '%-34s %-5s %4s %6s %6s %6s %5s %9s %5s %4s\n' kernel arch regs smem stack spill block occupancy HMMA LDSM
for src in "${sources[@]}"; do
  for arch in 80 90; do
    ptx="$out/${src}_sm${arch}.ptx"
    cubin="$sass_dir/${src}_sm${arch}.cubin"
    report="$(ptxas -v -arch="sm_${arch}" "$ptx" -o "$cubin" 2>&1)" ||
      { echo "gen.sh: ptxas failed on ${src}_sm${arch}.ptx (exit $?):" >&2; echo "$report" >&2; exit 1; }
    # ptxas prints, per kernel: "Compiling entry function 'NAME' for 'sm_XX'",
    # then "N bytes stack frame, N bytes spill stores, N bytes spill loads",
    # then "Used N registers, [N bytes smem, ]...". The PTX gives each
    # entry's .maxntid; cuobjdump -sass gives "Function : NAME" and its
    # instructions.
    table="$(
    { awk '/^\.visible \.entry/ { n = $3; sub(/\(.*/, "", n) } /\.maxntid/ { b = $2; sub(/,/, "", b); print "B", n, b }' "$ptx"
      cuobjdump -sass "$cubin" | awk '/Function :/ { n = $3 } / HMMA| HGMMA/ { tc[n]++ } / LDSM/ { ld[n]++ }
        END { for (k in tc) print "T", k, tc[k]; for (k in ld) print "L", k, ld[k] }'
      echo "$report" | awk '
        /Compiling entry function/ { match($0, /'"'"'[^'"'"']*'"'"'/); name = substr($0, RSTART + 1, RLENGTH - 2) }
        /bytes stack frame/ { frame = $1; spill = $5 + $9 }
        /Used [0-9]+ registers/ { match($0, /Used [0-9]+/); regs = substr($0, RSTART + 5, RLENGTH - 5); smem = 0
          if (match($0, /[0-9]+ bytes smem/)) smem = substr($0, RSTART, RLENGTH - 11)
          print "R", name, regs, smem, frame, spill }'
    } | awk -v arch="sm_$arch" -v smem_sm="$([ "$arch" = 80 ] && echo 167936 || echo 233472)" '
      $1 == "B" { block[$2] = $3 } $1 == "T" { tc[$2] = $3 } $1 == "L" { ld[$2] = $3 }
      $1 == "R" { order[++n] = $2; regs[$2] = $3; smem[$2] = $4; frame[$2] = $5; spill[$2] = $6 }
      END {
        for (i = 1; i <= n; i++) {
          k = order[i]; b = block[k]; occ = "-"
          if (b > 0) {
            w = int((b + 31) / 32); rw = int((regs[k] * 32 + 255) / 256) * 256
            nb = int(65536 / (rw * w)); t = int(2048 / (w * 32)); if (t < nb) nb = t; if (nb > 32) nb = 32
            if (smem[k] > 0) { s = int(smem_sm / (smem[k] + 1024)); if (s < nb) nb = s }
            occ = sprintf("%d/64", nb * w)
          }
          printf "%-34s %-5s %4d %6d %6d %6d %5s %9s %5d %4d\n", k, arch, regs[k], smem[k], frame[k], spill[k], (b > 0 ? b : "-"), occ, tc[k], ld[k]
        }
      }'
    )"
    echo "$table"
    if echo "$report" | grep -Eq '[1-9][0-9]* bytes spill (stores|loads)'; then
      echo "gen.sh: $src.cu spills registers on sm_$arch:" >&2
      echo "$report" | grep -E 'Compiling|spill' >&2
      spilled=1
    fi
    # The table's last column but one: HMMA/HGMMA in the kernel's SASS.
    for k in $(echo "$table" | awk '$1 ~ /^(attention_tc_|lora_narrow(_bf16)?$|lora_grad(_bf16)?$|lora_expand$|kmeans_assign_tc)/ && $9 == 0 { print $1 }'); do
      echo "gen.sh: $k has no tensor-core instruction in its sm_$arch SASS" >&2
      no_tc=1
    done
  done
done
[ "$spilled" = 0 ] && [ "$no_tc" = 0 ]
