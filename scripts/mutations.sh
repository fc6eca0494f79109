#!/usr/bin/env bash
# mutations.sh: plants, one at a time, each bug that a test is said to
# catch, and checks that the test then fails. It shows that those tests can
# fail; it is not part of `make test` (it takes minutes): run it with
# `make mutations` after changing one of the tests below or the code under
# them.
#
#	scripts/mutations.sh            every mutation
#	scripts/mutations.sh NAME...    only these (scripts/mutations.sh -l lists them)
#	scripts/mutations.sh -c         only check each text is in its file once (make check)
#
# The working tree is never modified: the script copies it (tracked and
# untracked files that git does not ignore) into a temporary folder, first
# runs each named test there unchanged (it must pass, or its failure under
# a mutation would prove nothing), then for each mutation replaces one exact
# piece of source text, runs the test, and puts the file back before the
# next. The copy is removed on any exit, Ctrl-C included. A mutation whose
# text is no longer in the source is reported STALE: update it here.
#
# Exit status: 0 when every mutation is caught, 1 otherwise.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
python=${PYTHON:-/usr/bin/python3}
go=${GO:-go}

# Each mutation: name, file, the exact text to replace (it must occur once),
# the replacement, and the command (run from the copy's root) that must
# fail. For a Go test the command is `gotest PKG TEST`: it counts as caught
# only when TEST itself reports a failure (a mutation that breaks the build
# is BROKEN, not caught).
names=()
declare -A m_file m_old m_new m_cmd

mutation() {
  names+=("$1")
  m_file[$1]=$2
  m_old[$1]=$3
  m_new[$1]=$4
  m_cmd[$1]=$5
}

# RMSNorm rounds the normalised row to bf16 before the weight, as HF does;
# rounding once, after the weight, must fail.
mutation rmsnorm-one-rounding tensor/ops_norm.go \
  '			roundTo(x.dtype, row) // HF casts the normalised row back to x'"'"'s dtype before the weight' \
  '			// (mutation: no rounding before the weight)' \
  'gotest ./tensor/ TestRMSNormRoundsLikeHF'

# A Parquet file that cannot be opened read as an empty data set, with no
# error.
mutation parquet-damaged-reads-empty dataset/parquet.go \
  '	f, err := parquet.OpenFile(ra, size)
	if err != nil {
		return nil, fmt.Errorf("dataset: %s: %w", path, err)
	}' \
  '	f, err := parquet.OpenFile(ra, size)
	if err != nil {
		return &parquetSource{path: path}, nil // (mutation: damaged reads as empty)
	}' \
  'gotest ./dataset/ TestDamagedParquet'

# The inertia summed in float32: off by ~1e-8 relative, which a 1e-4 bound
# let through.
mutation kmeans-inertia-float32 sampling/cluster/kmeans_lloyd.go \
  '	return matrix.Sum64(rowDistances(m, labels, cent))' \
  '	return float64(float32(matrix.Sum64(rowDistances(m, labels, cent)))) // (mutation)' \
  'gotest ./sampling/cluster/ TestKMeansAgainstScikitLearn'

# Every cluster gets a small share of the budget, under-served or not:
# about 3% of the picks leave the gap clusters (a "> 0.9 of the picks"
# bound let that through).
select_leak_old='	for j, v := range g {
		if v > 0 {
			w[j] = math.Pow(v/top, 1/temperature)
		}
	}'
select_leak_new='	for j, v := range g {
		w[j] = 0.02 // (mutation: every cluster gets a little)
		if v > 0 {
			w[j] = math.Pow(v/top, 1/temperature)
		}
	}'
mutation select-budget-leaks sampling/selection/select.go "$select_leak_old" "$select_leak_new" \
  'gotest ./sampling/selection/ TestCompassSelectsUnderServedClusters'
# The command's test: about 2 of its 60 picks leave, which ">= 55" let
# through.
mutation select-budget-leaks-cli sampling/selection/select.go "$select_leak_old" "$select_leak_new" \
  'gotest ./cmd/compass/ TestSelectCommand'

# BF16Products truncating the float32 operand instead of rounding it to
# nearest: within float32 summation error of the product for the 1e-5
# bound of the GEMM tests, not the product of the rounded operand.
mutation bf16-products-truncate tensor/gemm.go \
  '	parallelFor(len(src), 1<<16, func(lo, hi int) { ConvertF32ToBF16(dst[lo:hi], src[lo:hi]) })' \
  '	for i, v := range src { // (mutation: truncation)
		dst[i] = uint16(*(*uint32)(unsafe.Pointer(&v)) >> 16)
	}' \
  'gotest ./tensor/ TestMatMulBF16Products'

# The assembly rounding to bf16 without the lowest kept bit: ties round
# up instead of to even, one value in 65536 off by one unit; the test's
# sweep of every upper half with a tie below must catch it.
mutation convert-asm-ties-up tensor/convert_amd64.s \
  '	VPADDD    Y2, dst, dst; \' \
  '	VPADDD    Y9, dst, dst; \' \
  'gotest ./tensor/ TestConvertAssembly'

# compass bench taking timeout(1)'s second SIGTERM, microseconds after
# the first, for a person asking again: it quits and loses the results.
mutation bench-signal-repeat-quits cmd/compass/interrupt.go \
  '			case time.Since(at) >= repeatWindow:' \
  '			case true: // (mutation: any repeat quits)' \
  'gotest ./cmd/compass/ TestWatchSignalsTakesARepeatForTheSameRequest'

# The reference's self-test without the published configs must fail, not
# pass having checked nothing.
# Two training runs into one --output: the second, unlocked, removes the
# first's checkpoint in progress as a leftover.
mutation train-output-unlocked engine/trainrun.go \
  '	unlock, err := lockDir(o.Output)' \
  '	unlock, err := func() {}, error(nil) // (mutation: no lock)' \
  'gotest ./engine/ TestTrainOutputTakenByAnotherRun'

# A checkpoint known by its headers alone: other weights of the same
# shapes saved over the same files resume a run as the same model.
mutation checkpoint-hash-headers-only model/signature.go \
  '	for _, name := range f.Names() {' \
  '	for _, name := range f.Names()[:0] { // (mutation: no windows of the tensors)' \
  'gotest ./engine/ TestTrainResumeRefusesAnotherRun'

# continual reusing a finished run whatever it was trained from.
mutation continual-reuse-without-key engine/continual.go \
  'json.Unmarshal(data, &done) == nil && done.Key == key' \
  'json.Unmarshal(data, &done) == nil /* (mutation: any finished run) */' \
  'gotest ./engine/ TestContinual'

# adapt's train step keyed without the base model (with an encoder, the
# earlier steps do not depend on it).
mutation adapt-train-without-model engine/adapt.go \
  'inputs := []string{"model:" + modelID, sel.key}' \
  'inputs := []string{sel.key} // (mutation: not keyed on the model)' \
  'gotest ./engine/ TestAdaptKeysByContent'

mutation selftest-no-configs tools/reference/selftest.py \
  'd = os.path.join(REPO, "testdata", "configs")' \
  'd = os.path.join(REPO, "testdata", "no-such-configs")  # (mutation)' \
  'pytest_one test_published_configs'

# The pool of idle tokenizer encoders returned to without its lock: two
# goroutines' appends race (the race detector's report fails the test).
mutation tokenizer-pool-unlocked model/tokenizer/encoder.go \
  '	t.encMu.Lock()
	defer t.encMu.Unlock()
	t.encoders = append(t.encoders, e)' \
  '	t.encoders = append(t.encoders, e) // (mutation: no lock)' \
  'goracetest ./model/tokenizer/ TestEncodeConcurrently'

# From the mutation audits of 2026-12-07, one per area, each a bug the
# tests used to miss. OneRuler's number reader dropping every zero:
# "482761" scored right for the gold 4827061.
mutation ruler-digits-drop-zeros engine/ruler_score.go \
  '		if b.Len() == 0 && d == 0 {' \
  '		if d == 0 { // (mutation: every zero dropped)' \
  'gotest ./engine/ TestScoreNIAH'

# The paired bootstrap's "95%" interval from the 5th to 95th percentiles.
mutation bootstrap-interval-90 engine/evalstats.go \
  '		c.Low, c.High = percentile(means, 0.025), percentile(means, 0.975)' \
  '		c.Low, c.High = percentile(means, 0.05), percentile(means, 0.95) // (mutation)' \
  'gotest ./engine/ TestComparePairedInterval'

# The drift window's chi-square gate ten times looser than alpha.
mutation drift-alpha-gate sampling/drift/drift.go \
  '	w.Shifted = w.JS > o.Threshold && (o.Alpha < 0 || w.PValue < o.Alpha)' \
  '	w.Shifted = w.JS > o.Threshold && (o.Alpha < 0 || w.PValue < o.Alpha*10) // (mutation)' \
  'gotest ./sampling/drift/ TestCompareAlphaGate'

# The default gap comparing p_E with an additively smoothed p_D.
mutation select-gap-smoothed-have sampling/selection/select.go \
  '	pE, pD := shares(nE, 0), shares(nD, 0)' \
  '	pE, pD := shares(nE, 0), shares(nD, o.Smoothing) // (mutation)' \
  'gotest ./sampling/selection/ TestCompassSelectsUnderServedClusters'

# embed leaving its scratch files beside the output.
mutation embed-scratch-left sampling/embed/records.go \
  '			f.Close()
			os.Remove(f.Name())' \
  '			f.Close() // (mutation: the scratch files stay)' \
  'gotest ./sampling/embed/ TestRecordsToFile'

# The kernels' own mutations (fragment layouts, masks, head mappings,
# barriers, the k-means tie rule) are in scripts/emu-mutations.sh, with the
# GPU tests that catch them on the emulated device.

# -c: only check that every mutation's text is in its file once (make check).
if [ "${1:-}" = "-c" ]; then
  args=()
  for n in "${names[@]}"; do
    args+=("$n" "${m_file[$n]}" "${m_old[$n]}")
  done
  cd "$root" && exec python3 scripts/mutation_texts.py "${args[@]}"
fi
if [ "${1:-}" = "-l" ]; then
  printf '%s\n' "${names[@]}"
  exit 0
fi
selected=("$@")
if [ ${#selected[@]} -eq 0 ]; then
  selected=("${names[@]}")
fi
for n in "${selected[@]}"; do
  if [ -z "${m_file[$n]:-}" ]; then
    echo "mutations: no mutation $n (scripts/mutations.sh -l lists them)" >&2
    exit 2
  fi
done

work="$(mktemp -d "${TMPDIR:-/tmp}/compass-mutations.XXXXXX")"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "mutations: copying the working tree to $work"
(cd "$root" && git ls-files -z --cached --others --exclude-standard |
  xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
  tar --null -T - -cf -) | tar -C "$work" -xf -
cd "$work"

# gotest PKG TEST: runs one test (and its subtests) afresh; fails when it
# fails. Its output is in $log.
log="$work/.mutation.log"
gotest() {
  "$go" test -count=1 -run "^$2\$" "$1" >"$log" 2>&1
}
# goracetest PKG TEST: gotest under the race detector.
goracetest() {
  "$go" test -race -count=1 -run "^$2\$" "$1" >"$log" 2>&1
}
# pytest_one NAME: runs one test function of the reference's self-test.
pytest_one() {
  SELFTEST_ONE=$1 "$python" - >"$log" 2>&1 <<'EOF'
import os, sys
sys.path.insert(0, "tools/reference")
import selftest
getattr(selftest, os.environ["SELFTEST_ONE"])()
EOF
}

# caught CMD: whether the failure is the test's own, not a build or import
# error.
caught() {
  case "$1" in
    gotest\ *|goracetest\ *) grep -q -- "--- FAIL: ${1##* }" "$log" ;;
    pytest_one\ *) grep -q '^AssertionError' "$log" ;;
    *) true ;;
  esac
}

# replace FILE OLD NEW: replaces the one occurrence of OLD in FILE.
replace() {
  OLD=$2 NEW=$3 "$python" - "$1" <<'EOF'
import os, sys
path, old, new = sys.argv[1], os.environ["OLD"], os.environ["NEW"]
with open(path) as f:
    text = f.read()
n = text.count(old)
if n != 1:
    sys.exit(f"{path}: the text to replace occurs {n} times, want once")
with open(path, "w") as f:
    f.write(text.replace(old, new))
EOF
}

# Each command must pass before its mutations count: run once unmutated.
declare -A baseline
missed=0
for n in "${selected[@]}"; do
  file=${m_file[$n]} cmd=${m_cmd[$n]}
  if [ -z "${baseline[$cmd]:-}" ]; then
    baseline[$cmd]=ok
    if ! eval "$cmd"; then
      baseline[$cmd]=failed
      echo "mutations: '$cmd' fails without any mutation:"
      tail -n 15 "$log" | sed 's/^/    /'
    fi
  fi
  if [ "${baseline[$cmd]}" = failed ]; then
    printf '%-32s UNTRIED %s fails without the bug\n' "$n" "$cmd"
    missed=$((missed + 1))
    continue
  fi
  cp -p "$file" "$file.orig"
  if ! replace "$file" "${m_old[$n]}" "${m_new[$n]}" 2>"$log"; then
    printf '%-32s STALE   %s\n' "$n" "$(tail -n 1 "$log")"
    mv "$file.orig" "$file"
    missed=$((missed + 1))
    continue
  fi
  start=$(date +%s)
  if eval "$cmd"; then
    printf '%-32s MISSED  %s passed with the bug planted\n' "$n" "$cmd"
    missed=$((missed + 1))
  elif caught "$cmd"; then
    printf '%-32s caught  by %s (%ds)\n' "$n" "$cmd" "$(($(date +%s) - start))"
  else
    printf '%-32s BROKEN  %s failed without the test failing:\n' "$n" "$cmd"
    tail -n 15 "$log" | sed 's/^/    /'
    missed=$((missed + 1))
  fi
  mv "$file.orig" "$file"
done

if [ "$missed" -gt 0 ]; then
  echo "mutations: $missed of ${#selected[@]} not caught"
  exit 1
fi
echo "mutations: all ${#selected[@]} caught"
