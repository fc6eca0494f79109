#!/usr/bin/env python3
"""Writes the SentencePiece side of the Unigram goldens: the ids that
SentencePiece itself (Debian's python3-sentencepiece) gives the corpus lines
(testdata/tokenizers/corpus.jsonl) and every UDHR paragraph (udhr.js, one hash
per declaration, as golden.js hashes), with each model committed under
testdata/tokenizers/unigram/. Ids are mapped into the converted tokenizer.json's
numbering (XLM-R's fairseq offset for udhr-xlmr).

Usage: python3 tools/tokref/spm_golden.py          write testdata/tokenizers/golden/NAME.spm.json
       python3 tools/tokref/spm_golden.py --check  fail if they differ from what SentencePiece gives now
"""
import hashlib
import json
import os
import subprocess
import sys

import sentencepiece as spm

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
TESTDATA = os.path.join(ROOT, 'testdata', 'tokenizers')
MODELS = {'udhr-xlmr': 'xlmr', 'udhr-bytes': 'none'}


def id_map(kind):
    if kind == 'xlmr':
        # XLMRobertaTokenizer: <unk> (0) is 3, the other pieces move up by one.
        return lambda i: 3 if i == 0 else i + 1
    return lambda i: i


def ids_hash(id_lists):
    text = ''.join(','.join(str(i) for i in ids) + '\n' for ids in id_lists)
    return hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]


def declarations():
    script = "process.stdout.write(JSON.stringify(require('./tools/tokref/udhr').declarations()))"
    out = subprocess.run(['node', '-e', script], cwd=ROOT, check=True, capture_output=True).stdout
    return json.loads(out)


def golden(name, kind, corpus, decls):
    sp = spm.SentencePieceProcessor(model_file=os.path.join(TESTDATA, 'unigram', name, 'spm.model'))
    m = id_map(kind)
    cases = [[m(i) for i in sp.encode(line)] for line in corpus]
    out = []
    for d in decls:
        ids = [[m(i) for i in sp.encode(p)] for p in d['paragraphs']]
        out.append({'file': d['file'], 'paragraphs': len(ids), 'ids': ids_hash(ids)})
    head = json.dumps({'tokenizer': name, 'reference': 'sentencepiece ' + spm.__version__, 'id_map': kind},
                      ensure_ascii=False, separators=(',', ':'))
    lines = ',\n'.join(json.dumps(c, separators=(',', ':')) for c in cases)
    dlines = ',\n'.join(json.dumps(d, ensure_ascii=False, separators=(',', ':')) for d in out)
    return head[:-1] + ',"cases":[\n' + lines + '\n],"declarations":[\n' + dlines + '\n]}\n'


def main():
    check = '--check' in sys.argv[1:]
    with open(os.path.join(TESTDATA, 'corpus.jsonl'), encoding='utf-8') as f:
        corpus = [json.loads(line)['text'] for line in f if line.strip()]
    decls = declarations()
    bad = 0
    for name, kind in MODELS.items():
        text = golden(name, kind, corpus, decls)
        path = os.path.join(TESTDATA, 'golden', name + '.spm.json')
        if check:
            old = open(path, encoding='utf-8').read() if os.path.exists(path) else ''
            if old != text:
                print(f'spm_golden: {os.path.relpath(path, ROOT)} differs from what SentencePiece gives now', file=sys.stderr)
                bad += 1
        else:
            with open(path, 'w', encoding='utf-8') as f:
                f.write(text)
    if bad:
        sys.exit('spm_golden: run `python3 tools/tokref/spm_golden.py` and review the difference')
    print(f'spm_golden: {len(MODELS)} golden files {"match SentencePiece" if check else "written"}', file=sys.stderr)


if __name__ == '__main__':
    main()
