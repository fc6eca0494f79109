# compass: build, test, check and benchmark. Each target is one command a
# person could type; CI (.ci/run) runs `make test` and `make check`.

GO          ?= go
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
PYTHON      ?= /usr/bin/python3
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)

# go-nvml's cgo preamble declares deprecated NVML functions; gcc's warnings
# about them are noise.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

.PHONY: build test check bench fuzz clean

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/compass ./cmd/compass

test:
	$(GO) test ./...
	$(PYTHON) tools/reference/selftest.py

check:
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

# Benchmarks print ratios against references measured in the same run
# (PyTorch from Debian's python3-torch at /usr/bin/python3) and record the
# results in bench/results/.
bench: build
	bin/compass bench --out bench/results
	$(GO) test -run '^$$' -bench . -benchtime 2x ./tensor/...

# A minute of fuzzing of the safetensors header parser; new crashers land in
# tensor/safetensors/testdata/fuzz and then run with every `make test`.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParseHeader -fuzztime 60s ./tensor/safetensors/

clean:
	rm -rf bin
