#!/usr/bin/env node
// Builds the two small WordPiece tokenizers (BERT uncased and cased) that
// compass's tokenizer tests use, with HF tokenizers itself
// (@anush008/tokenizers): its WordPiece trainer learns a vocabulary from the
// UDHR corpus (udhr.js) under BertNormalizer and BertPreTokenizer; the
// vocabulary is cut to the special tokens, the 1,000 most frequent
// characters and the first learned pieces (4,000 entries), so that rare
// scripts fall back to [UNK]; and HF assembles and saves tokenizer.json as
// transformers' BertConverter configures it (BertNormalizer,
// BertPreTokenizer, WordPiece "##", WordPiece decoder). The uncased file
// uses TemplateProcessing "[CLS] $A [SEP]", the cased one BertProcessing.
//
// Usage: node tools/tokref/wordpiece_train.js   (writes testdata/tokenizers/wordpiece/NAME/)
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const tk = require('@anush008/tokenizers');
const { corpus } = require('./udhr');

const root = path.resolve(__dirname, '..', '..');
const specials = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'];
const vocabSize = 4000;
const alphabetSize = 1000;

function build(name, lowercase, textFile, lines) {
  const normalizer = () => tk.bertNormalizer({ cleanText: true, handleChineseChars: true, lowercase });
  const trainer = new tk.Tokenizer(tk.WordPiece.empty());
  trainer.setNormalizer(normalizer());
  trainer.setPreTokenizer(tk.bertPreTokenizer());
  trainer.train([textFile]);
  const learned = Object.entries(trainer.getVocab(false)).sort((a, b) => a[1] - b[1]).map((e) => e[0]);

  // The most frequent characters of the normalized corpus.
  const norm = normalizer();
  const freq = new Map();
  for (const l of lines) {
    for (const c of norm.normalizeString(l)) freq.set(c, (freq.get(c) || 0) + 1);
  }
  const alphabet = new Set([...freq.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .slice(0, alphabetSize).map((e) => e[0]));
  const keep = (tok) => {
    const chars = [...tok.replace(/^##/, '')];
    return chars.every((c) => alphabet.has(c)) && !/\s/.test(tok);
  };
  const vocab = {};
  for (const tok of specials.concat(learned.filter(keep))) {
    if (Object.keys(vocab).length >= vocabSize) break;
    if (!(tok in vocab)) vocab[tok] = Object.keys(vocab).length;
  }

  const tok = new tk.Tokenizer(tk.WordPiece.init(vocab, { unkToken: '[UNK]', continuingSubwordPrefix: '##', maxInputCharsPerWord: 100 }));
  tok.setNormalizer(normalizer());
  tok.setPreTokenizer(tk.bertPreTokenizer());
  tok.setDecoder(tk.wordPieceDecoder('##', true));
  if (lowercase) {
    tok.setPostProcessor(tk.templateProcessing('[CLS]:0 $A:0 [SEP]:0', '[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1',
      [['[CLS]', vocab['[CLS]']], ['[SEP]', vocab['[SEP]']]]));
  } else {
    tok.setPostProcessor(tk.bertProcessing(['[SEP]', vocab['[SEP]']], ['[CLS]', vocab['[CLS]']]));
  }
  tok.addSpecialTokens(specials);
  const dir = path.join(root, 'testdata', 'tokenizers', 'wordpiece', name);
  fs.mkdirSync(dir, { recursive: true });
  tok.save(path.join(dir, 'tokenizer.json'), false);
  process.stderr.write(`wordpiece_train: ${name}: ${Object.keys(vocab).length} entries -> ${path.relative(root, dir)}\n`);
}

const lines = corpus().map((l) => l.text);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'compass-wordpiece-'));
const textFile = path.join(tmp, 'udhr.txt');
fs.writeFileSync(textFile, lines.join('\n') + '\n');
try {
  build('bert-uncased', true, textFile, lines);
  build('bert-cased', false, textFile, lines);
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
