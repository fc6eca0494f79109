#!/usr/bin/env bash
# device-bundle.sh: builds, on this machine (Go, no GPU), everything the
# device run needs, into dist/device/ (git-ignored):
#
#	compass.gz       the CLI (compass gpu, compass version there)
#	cgo.test.gz      the CUDA backend's tests and benchmarks (go test -c -tags cuda)
#	fixtures/        tiny checkpoints, PEFT adapters and inputs (scripts/tinyfixtures)
#	testdata/configs the published configs (the Llama-3.1-8B training-step benchmark)
#	reference/       tools/reference, the PyTorch reference
#
# The device machine has CUDA, PyTorch, transformers and PEFT but no Go.
# Then, with the device tool, from the repository root:
#	run  command: bash scripts/device-check.sh   carry: ["dist/device"]   timeout_s: 540
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/dist/device"
cd "$root"
rm -rf "$out"
mkdir -p "$out/testdata"

# go-nvml's cgo preamble declares deprecated NVML functions; gcc's warnings
# about them are noise (as in the Makefile).
export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g -Wno-deprecated-declarations}"
version="$(git describe --tags --always --dirty 2>/dev/null || echo devel)"
go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$out/compass" ./cmd/compass
# -s -w: no symbol table or DWARF (stack traces keep their names); the
# bundle must stay well under what the device tool carries.
go test -c -tags cuda -trimpath -ldflags "-s -w" -o "$out/cgo.test" ./cgo/
go run ./scripts/tinyfixtures "$out/fixtures"
cp -r testdata/configs "$out/testdata/"
cp -r tools/reference "$out/reference"
rm -rf "$out/reference/__pycache__"
# The two binaries are 28 MiB each; gzipped, 11. device-check.sh unpacks them.
gzip -9 "$out/compass" "$out/cgo.test"

# The device tool sends the working tree and the carried paths, 64 MiB in
# all; keep the bundle well under that.
bytes="$(du -sb "$out" | cut -f1)"
limit=$((48 << 20))
echo "dist/device: $((bytes >> 20)) MiB ($bytes bytes)"
du -sh "$out"/* | sed 's|'"$root"'/||'
if [ "$bytes" -gt "$limit" ]; then
  echo "device-bundle: dist/device is $bytes bytes, over $limit" >&2
  exit 1
fi
