#!/usr/bin/env python3
"""Converts a SentencePiece Unigram model (.model) to tokenizer.json as HF
transformers' convert_slow_tokenizer does, without transformers or tokenizers:
the JSON is written field by field as HF tokenizers serialises it.

  xlmr  XLMRobertaConverter: vocab <s> <pad> </s> <unk>, the pieces after the
        first three, <mask>; unk_id 3; normalizer Precompiled, Strip (right),
        Replace(" {2,}" -> "▁"); Metaspace (prepend "always"); TemplateProcessing
        "<s> $A </s>" (pair "<s> $A </s> </s> $B </s>"); Metaspace decoder.
  spm   SpmConverter with byte fallback: SentencePiece's own ids; the same
        normalizer and pre-tokenizer; RobertaProcessing; decoders Replace("▁"," "),
        ByteFallback, Fuse, Strip(" ", 1, 0), as for Llama's SentencePiece files.

Usage: python3 tools/tokref/spm_to_json.py MODEL xlmr|spm > tokenizer.json
"""
import base64
import json
import sys

from sentencepiece import sentencepiece_model_pb2 as model_pb2

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def added(id_, content, special=True, lstrip=False):
    return {'id': id_, 'content': content, 'single_word': False, 'lstrip': lstrip,
            'rstrip': False, 'normalized': False, 'special': special}


def normalizer(proto):
    steps = [
        {'type': 'Strip', 'strip_left': False, 'strip_right': True},
        {'type': 'Replace', 'pattern': {'Regex': ' {2,}'}, 'content': '\u2581'},
    ]
    charsmap = proto.normalizer_spec.precompiled_charsmap
    if charsmap:
        steps.insert(0, {'type': 'Precompiled',
                         'precompiled_charsmap': base64.b64encode(charsmap).decode('ascii')})
    return {'type': 'Sequence', 'normalizers': steps}


def metaspace():
    return {'type': 'Metaspace', 'replacement': '\u2581', 'prepend_scheme': 'always', 'split': True}


def convert(model_bytes, layout):
    proto = model_pb2.ModelProto()
    proto.ParseFromString(model_bytes)
    if proto.trainer_spec.model_type != 1:
        raise SystemExit('spm_to_json: not a Unigram model')
    pieces = proto.pieces
    if layout == 'xlmr':
        vocab = [['<s>', 0.0], ['<pad>', 0.0], ['</s>', 0.0], ['<unk>', 0.0]]
        vocab += [[p.piece, p.score] for p in pieces[3:]]
        vocab.append(['<mask>', 0.0])
        added_tokens = [added(0, '<s>'), added(1, '<pad>'), added(2, '</s>'), added(3, '<unk>'),
                        added(len(vocab) - 1, '<mask>', lstrip=True)]
        model = {'type': 'Unigram', 'unk_id': 3, 'vocab': vocab, 'byte_fallback': False}
        single = [{'SpecialToken': {'id': '<s>', 'type_id': 0}}, {'Sequence': {'id': 'A', 'type_id': 0}},
                  {'SpecialToken': {'id': '</s>', 'type_id': 0}}]
        pair = single + [{'SpecialToken': {'id': '</s>', 'type_id': 0}}, {'Sequence': {'id': 'B', 'type_id': 0}},
                         {'SpecialToken': {'id': '</s>', 'type_id': 0}}]
        post = {'type': 'TemplateProcessing', 'single': single, 'pair': pair, 'special_tokens': {
            '<s>': {'id': '<s>', 'ids': [0], 'tokens': ['<s>']},
            '</s>': {'id': '</s>', 'ids': [2], 'tokens': ['</s>']}}}
        decoder = metaspace()
    elif layout == 'spm':
        vocab = [[p.piece, p.score] for p in pieces]
        # Control and user-defined pieces are added tokens; control ones special.
        added_tokens = [added(i, p.piece, special=p.type == CONTROL)
                        for i, p in enumerate(pieces) if p.type in (CONTROL, USER_DEFINED)]
        model = {'type': 'Unigram', 'unk_id': proto.trainer_spec.unk_id, 'vocab': vocab,
                 'byte_fallback': bool(proto.trainer_spec.byte_fallback)}
        bos, eos = proto.trainer_spec.bos_id, proto.trainer_spec.eos_id
        post = {'type': 'RobertaProcessing', 'sep': [pieces[eos].piece, eos], 'cls': [pieces[bos].piece, bos],
                'trim_offsets': True, 'add_prefix_space': True}
        decoder = {'type': 'Sequence', 'decoders': [
            {'type': 'Replace', 'pattern': {'String': '\u2581'}, 'content': ' '},
            {'type': 'ByteFallback'}, {'type': 'Fuse'},
            {'type': 'Strip', 'content': ' ', 'start': 1, 'stop': 0}]}
    else:
        raise SystemExit(f'spm_to_json: unknown layout {layout!r}')
    tok = {
        'version': '1.0', 'truncation': None, 'padding': None, 'added_tokens': added_tokens,
        'normalizer': normalizer(proto), 'pre_tokenizer': metaspace(), 'post_processor': post,
        'decoder': decoder, 'model': model,
    }
    return json.dumps(tok, ensure_ascii=False, indent=None, separators=(',', ':')) + '\n'


if __name__ == '__main__':
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    with open(sys.argv[1], 'rb') as f:
        sys.stdout.write(convert(f.read(), sys.argv[2]))
