#!/usr/bin/env node
// The o200k references on the UDHR corpus (udhr.js): tiktoken (OpenAI's
// Rust BPE compiled to WebAssembly, npm `tiktoken`) and HF tokenizers
// (@anush008/tokenizers, Rust through Node's native bindings).
//
//   node tools/tokref/tiktoken.js parity BIN   compass's ids (BIN tokenize, o200k tokenizer.json)
//                                              must equal tiktoken's on every paragraph; exit 1 if not
//   node tools/tokref/tiktoken.js bench [--quick]   load and encode times (--quick: every 20th
//                                              paragraph), one JSON line per measurement:
//     {"impl", "threads", "load_s", "encode_s", "bytes", "tokens", "paragraphs"}
//
// Load is timed in a fresh worker (reading and building the encoder);
// encode is the median of three passes over the corpus after a warm-up.
// tiktoken has no threads of its own: at 2 threads two workers each
// encode half the paragraphs. HF tokenizers uses its own thread pool
// (encodeBatch; TOKENIZERS_PARALLELISM=false for one thread).
'use strict';

const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');
const { Worker, isMainThread, parentPort, workerData } = require('worker_threads');
const { corpus } = require('./udhr.js');

const o200kDir = path.join(__dirname, 'node_modules', '@lenml', 'tokenizer-gpt4o', 'models');

function now() { return Number(process.hrtime.bigint()) / 1e9; }

function loadTiktoken() {
  const { get_encoding } = require('tiktoken');
  return get_encoding('o200k_base');
}

function median(xs) { xs.sort((a, b) => a - b); return xs[Math.floor(xs.length / 2)]; }

// worker: load tiktoken, then encode its share of the paragraphs when told.
if (!isMainThread) {
  const t0 = now();
  const enc = loadTiktoken();
  const load = now() - t0;
  const texts = workerData.texts;
  parentPort.postMessage({ load });
  parentPort.on('message', (m) => {
    if (m === 'stop') { enc.free(); process.exit(0); }
    let tokens = 0;
    const t = now();
    for (const s of texts) tokens += enc.encode(s).length;
    parentPort.postMessage({ tokens, seconds: now() - t });
  });
  return;
}

async function tiktokenBench(texts, threads) {
  const shares = Array.from({ length: threads }, (_, i) => texts.filter((_, j) => j % threads === i));
  const workers = shares.map((s) => new Worker(__filename, { workerData: { texts: s } }));
  const next = (w) => new Promise((resolve) => w.once('message', resolve));
  const loads = await Promise.all(workers.map(next));
  const passes = [];
  let tokens = 0;
  for (let i = 0; i < 4; i++) { // a warm-up, then three timed passes
    const t0 = now();
    const done = await Promise.all(workers.map((w) => { const p = next(w); w.postMessage('go'); return p; }));
    tokens = done.reduce((n, d) => n + d.tokens, 0);
    if (i > 0) passes.push(now() - t0);
  }
  workers.forEach((w) => w.postMessage('stop'));
  return { load_s: Math.max(...loads.map((l) => l.load)), encode_s: median(passes), tokens };
}

function hfBench(texts, threads) {
  // A child process, so that TOKENIZERS_PARALLELISM takes effect before the pool starts.
  const script = `
    const { Tokenizer } = require('@anush008/tokenizers');
    const texts = JSON.parse(require('fs').readFileSync(0, 'utf8'));
    const now = () => Number(process.hrtime.bigint()) / 1e9;
    (async () => {
      const t0 = now();
      const tok = Tokenizer.fromFile(${JSON.stringify(path.join(o200kDir, 'tokenizer.json'))});
      const load = now() - t0;
      let tokens = 0;
      for (const e of await tok.encodeBatch(texts, { addSpecialTokens: false })) tokens += e.getLength();
      const passes = [];
      for (let i = 0; i < 3; i++) { const t = now(); await tok.encodeBatch(texts, { addSpecialTokens: false }); passes.push(now() - t); }
      passes.sort((a, b) => a - b);
      process.stdout.write(JSON.stringify({ load_s: load, encode_s: passes[1], tokens }));
    })();`;
  const env = { ...process.env, RAYON_NUM_THREADS: String(threads) };
  if (threads === 1) env.TOKENIZERS_PARALLELISM = 'false';
  const out = execFileSync(process.execPath, ['-e', script], { cwd: __dirname, env, input: JSON.stringify(texts), maxBuffer: 1 << 26 });
  return JSON.parse(out.toString());
}

async function main() {
  const [cmd, bin] = process.argv.slice(2);
  let lines = corpus();
  if (cmd === 'bench' && bin === '--quick') lines = lines.filter((_, i) => i % 20 === 0);
  const texts = lines.map((l) => l.text);
  const bytes = texts.reduce((n, s) => n + Buffer.byteLength(s, 'utf8'), 0);
  if (cmd === 'bench') {
    for (const threads of [1, 2]) {
      const t = await tiktokenBench(texts, threads);
      console.log(JSON.stringify({ impl: 'tiktoken', threads, ...t, bytes, paragraphs: texts.length }));
      const h = hfBench(texts, threads);
      console.log(JSON.stringify({ impl: 'hf-tokenizers', threads, ...h, bytes, paragraphs: texts.length }));
    }
    return;
  }
  if (cmd !== 'parity' || !bin) {
    console.error('usage: node tools/tokref/tiktoken.js parity BIN | bench');
    process.exit(2);
  }
  const enc = loadTiktoken();
  const input = texts.map((s) => JSON.stringify({ text: s })).join('\n') + '\n';
  const out = execFileSync(bin, ['tokenize', '--tokenizer', o200kDir, '--jsonl'], { input, maxBuffer: 1 << 28 })
    .toString().trim().split('\n');
  if (out.length !== texts.length) {
    console.error(`tiktoken parity: compass wrote ${out.length} lines for ${texts.length} paragraphs`);
    process.exit(1);
  }
  let bad = 0;
  for (let i = 0; i < texts.length; i++) {
    const want = Array.from(enc.encode(texts[i]));
    const got = JSON.parse(out[i]);
    if (got.length !== want.length || got.some((v, j) => v !== want[j])) {
      if (bad++ < 5) console.error(`paragraph ${i + 1} (${lines[i].lang}): compass ${JSON.stringify(got.slice(0, 20))}..., tiktoken ${JSON.stringify(want.slice(0, 20))}...`);
    }
  }
  enc.free();
  console.log(`tiktoken parity: o200k ids of ${texts.length} UDHR paragraphs (${bytes} bytes), ${bad} differ`);
  process.exit(bad === 0 ? 0 : 1);
}

main().catch((e) => { console.error(e); process.exit(1); });
