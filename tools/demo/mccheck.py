#!/usr/bin/python3
"""Checks that the demo's multiple-choice set is answerable: scores each item two ways with the
PyTorch reference (tools/reference/reference.py's loader and forward, float32):

  letter   Global-MMLU's prompt ("question\\nA. ...\\nD. ...\\nAnswer:") and the log-likelihood of
           " A" .. " D", as `compass eval --task global-mmlu` scores it;
  cloze    the passage followed by each option, the option's mean log-likelihood per token: what
           a model that knows the domain but was never taught the A-D format can do.

    mccheck.py [--model testdata/demo/model] [--data testdata/demo/task/mc/uk/test.jsonl] [--limit 100]

Chance is 25%. Prints both accuracies as JSON.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools", "reference"))

import torch  # noqa: E402
import reference  # noqa: E402


def encode(texts, tokenizer):
    """Token ids of each text, without special tokens, by HF tokenizers (tokenize.js's library)."""
    script = ("const {Tokenizer}=require(process.argv[1]);const fs=require('fs');(async()=>{"
              "const t=Tokenizer.fromFile(process.argv[2]);const out=[];"
              "for(const s of JSON.parse(fs.readFileSync(0,'utf8'))){"
              "const e=await t.encode(s,null,{addSpecialTokens:false});out.push(Array.from(e.getIds()));}"
              "process.stdout.write(JSON.stringify(out));})()")
    lib = os.path.join(REPO, "tools", "tokref", "node_modules", "@anush008", "tokenizers")
    res = subprocess.run(["node", "-e", script, lib, tokenizer], input=json.dumps(texts), capture_output=True,
                         text=True, check=True)
    return json.loads(res.stdout)


def continuation_logprob(model, bos, context, continuation):
    ids = torch.tensor([[bos] + context + continuation])
    with torch.no_grad():
        logits = reference.model_forward(model, ids)[0].float()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    targets = ids[0, 1:]
    picked = logp.gather(-1, targets[:, None])[:, 0]
    return picked[-len(continuation):].sum().item(), len(continuation)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(REPO, "testdata", "demo", "model"))
    ap.add_argument("--data", default=os.path.join(REPO, "testdata", "demo", "task", "mc", "uk", "test.jsonl"))
    ap.add_argument("--limit", type=int, default=100)
    args = ap.parse_args()
    model = reference.load_model(args.model, "float32")
    with open(os.path.join(args.model, "config.json")) as f:
        bos = json.load(f)["bos_token_id"]
    with open(args.data, encoding="utf-8") as f:
        items = [json.loads(line) for line in f if line.strip()][:args.limit]

    texts = []
    for it in items:
        opts = [it["option_" + c] for c in "abcd"]
        prompt = f"{it['question'].strip()}\nA. {opts[0]}\nB. {opts[1]}\nC. {opts[2]}\nD. {opts[3]}\nAnswer:"
        texts += [prompt, " A", " B", " C", " D", it["question"].strip()] + [" " + o for o in opts]
    encoded = encode(texts, os.path.join(args.model, "tokenizer.json"))
    letter = cloze = 0
    for k, it in enumerate(items):
        enc = encoded[10 * k:10 * k + 10]
        gold = "ABCD".index(it["answer"])
        scores = [continuation_logprob(model, bos, enc[0], enc[1 + i])[0] for i in range(4)]
        letter += max(range(4), key=lambda i: scores[i]) == gold
        per_token = []
        for i in range(4):
            s, n = continuation_logprob(model, bos, enc[5], enc[6 + i])
            per_token.append(s / n)
        cloze += max(range(4), key=lambda i: per_token[i]) == gold
    n = len(items)
    print(json.dumps({"items": n, "letter_accuracy": round(letter / n, 3), "cloze_accuracy": round(cloze / n, 3),
                      "chance": 0.25}))


if __name__ == "__main__":
    main()
