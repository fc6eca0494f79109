#!/usr/bin/env node
// Tokenizes JSONL text for pretrain.py with the demo tokenizer and HF
// tokenizers (the same ids compass gives: the parity goldens check it):
// each record becomes <|begin_of_text|> ids... <|end_of_text|>, and the
// records are written one after another as little-endian uint16.
//
// Usage: node tools/demo/tokenize.js TOKENIZER.json IN.jsonl OUT.u16
'use strict';

const fs = require('fs');
const path = require('path');
const { Tokenizer } = require(path.join(__dirname, '..', 'tokref', 'node_modules', '@anush008', 'tokenizers'));

async function main() {
  const [tokPath, inPath, outPath] = process.argv.slice(2);
  if (!outPath) {
    process.stderr.write('usage: node tools/demo/tokenize.js TOKENIZER.json IN.jsonl OUT.u16\n');
    process.exit(2);
  }
  const tok = Tokenizer.fromFile(tokPath);
  const eos = JSON.parse(fs.readFileSync(tokPath, 'utf8')).added_tokens.find((t) => t.content === '<|end_of_text|>').id;
  const lines = fs.readFileSync(inPath, 'utf8').split('\n').filter((l) => l.trim() !== '');
  const chunks = [];
  let total = 0;
  for (const line of lines) {
    const enc = await tok.encode(JSON.parse(line).text, null, { addSpecialTokens: true });
    const ids = Array.from(enc.getIds());
    ids.push(eos);
    const buf = Buffer.alloc(ids.length * 2);
    ids.forEach((id, i) => buf.writeUInt16LE(id, i * 2));
    chunks.push(buf);
    total += ids.length;
  }
  fs.writeFileSync(outPath + '.tmp', Buffer.concat(chunks));
  fs.renameSync(outPath + '.tmp', outPath);
  process.stderr.write(`tokenize: ${lines.length} records, ${total} tokens -> ${outPath}\n`);
}

main().catch((e) => {
  process.stderr.write(`tokenize: ${e.message}\n`);
  process.exit(1);
});
