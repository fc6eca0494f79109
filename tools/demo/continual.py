#!/usr/bin/python3
"""Builds the demo's shifting stream for `compass continual` (make demo-continual).

Three periods whose usage moves from one domain to another: manual pages (technical), then the
Quran's translations (religious), then the UDHR and iso-codes' names (legal and geography), each
in the languages the demo pool has for it. The records come from the demo pool
(testdata/demo/task/pool.jsonl), which the demo model was not pretrained on. Each period's
evaluation text is a seeded draw of its records, disjoint from its training data.

Outputs (testdata/demo/continual/ unless --out): pN-DOMAIN.jsonl (training records, the pool's
columns) and pN-DOMAIN-eval.jsonl ({"text"}); testdata/demo/continual.yaml refers to them.

    continual.py [--pool testdata/demo/task/pool.jsonl] [--seed 1]
"""

import argparse
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PERIODS = [("technical", ["technical"]), ("religious", ["religious"]), ("legal", ["legal", "geography"])]
TRAIN, EVAL = 160, 40  # records per period


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", default=os.path.join(ROOT, "testdata", "demo", "task", "pool.jsonl"))
    ap.add_argument("--out", default=os.path.join(ROOT, "testdata", "demo", "continual"))
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with open(args.pool, encoding="utf-8") as f:
        pool = [json.loads(line) for line in f if line.strip()]
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    summary = {}
    for i, (name, domains) in enumerate(PERIODS, 1):
        recs = [r for r in pool if r["domain"] in domains]
        rng.shuffle(recs)
        if len(recs) < TRAIN + EVAL:
            raise SystemExit(f"continual: period {name}: {len(recs)} records, need {TRAIN + EVAL}")
        ev, train = recs[:EVAL], recs[EVAL:EVAL + TRAIN]
        base = os.path.join(args.out, f"p{i}-{name}")
        with open(base + ".jsonl", "w", encoding="utf-8") as f:
            for r in train:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        with open(base + "-eval.jsonl", "w", encoding="utf-8") as f:
            for r in ev:
                f.write(json.dumps({"text": r["text"]}, ensure_ascii=False) + "\n")
        summary[name] = {"train": len(train), "eval": len(ev),
                         "languages": sorted({r["language"] for r in train})}
    print(json.dumps(summary, ensure_ascii=False))


if __name__ == "__main__":
    main()
