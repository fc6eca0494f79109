#!/usr/bin/python3
"""Builds the demo task from the demo corpus (corpus.py), and the text the demo model is pretrained on.

The target language T is Ukrainian (uk). Its own data D_t is in the legal and geography domains
(the UDHR and iso-codes' names); its usage E_t is technical (Ukrainian manual pages), a domain D_t
lacks. The auxiliary pool D_aux holds the other languages over all four domains, with the technical
text of Ukrainian's relatives (Russian, Polish, Czech; Serbian, Croatian, Slovene) among them, which
COMPASS should find. Every Ukrainian technical passage is kept out of pretraining, and so is the
pool, so that the base model has seen neither the target usage nor the adaptation data.

Outputs (testdata/demo/task/ unless --out):
    pool.jsonl            D_aux: {"text", "language", "domain", "source"}
    uk-data.jsonl         D_t
    uk-usage.jsonl        E_t
    uk-heldout.jsonl      held-out target-usage text, {"text"}: for perplexity
    mc/uk/test.jsonl      multiple choice in Global-MMLU's schema: a passage, its true continuation
                          and three continuations of other passages of the same language
and tools/demo/build/pretrain.jsonl: the corpus less all of the above and less every other
Ukrainian technical passage.

Usage and held-out text and the multiple-choice passages come from disjoint sets of manual pages,
so no page is split between them.

    task.py [--corpus tools/demo/build/corpus.jsonl] [--seed 1]
"""

import argparse
import collections
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

TARGET, USAGE_DOMAIN = "uk", "technical"
DATA_DOMAINS = ("legal", "geography")
# Pool records per (language, domain): the large domains get more, and none dominates.
POOL_CAP = {"technical": 40, "religious": 40, "legal": 12, "geography": 12}
USAGE_RECORDS, HELDOUT_RECORDS, MC_ITEMS = 300, 150, 300
# The held-out file keeps this many of the held-out pages' records, so that scoring it in the demo
# is quick; the others stay unused (and out of pretraining, as all Ukrainian technical text).
HELDOUT_KEEP = 100
MC_MIN_CHARS = 300  # a passage long enough for a context and a continuation
MC_OPTION_CHARS = 120  # every option is cut to about this length, so length gives nothing away


def page_of(rec):
    return rec["source"].split("#")[0]


def cut_words(text, n):
    """The first n characters of text, ended at a word boundary."""
    if len(text) <= n:
        return text
    i = text.rfind(" ", n // 2, n)
    return text[:i if i > 0 else n]


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)


def multiple_choice(passages, rng):
    """Items in Global-MMLU's columns from passages (each at least MC_MIN_CHARS long)."""
    splits = []
    for rec in passages:
        text = rec["text"].replace("\n", " ")
        at = text.rfind(" ", 0, int(len(text) * 0.6))
        if at < 100:
            continue
        splits.append((rec, text[:at].strip(), cut_words(text[at:].strip(), MC_OPTION_CHARS)))
    items = []
    for i, (rec, context, truth) in enumerate(splits[:MC_ITEMS]):
        others = [s[2] for s in splits if page_of(s[0]) != page_of(rec) and s[2] != truth]
        options = rng.sample(others, 3)
        gold = rng.randrange(4)
        options.insert(gold, truth)
        items.append({
            "sample_id": f"demo-{TARGET}-{USAGE_DOMAIN}/test/{i}",
            "subject": USAGE_DOMAIN, "subject_category": "demo",
            "question": context,
            "option_a": options[0], "option_b": options[1], "option_c": options[2], "option_d": options[3],
            "answer": "ABCD"[gold],
            "required_knowledge": None, "time_sensitive": None, "reference": rec["source"],
            "culture": None, "region": None, "country": None,
            "cultural_sensitivity_label": "-", "is_annotated": False,
        })
    return items


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=os.path.join(HERE, "build", "corpus.jsonl"))
    ap.add_argument("--out", default=os.path.join(REPO, "testdata", "demo", "task"))
    ap.add_argument("--pretrain", default=os.path.join(HERE, "build", "pretrain.jsonl"))
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)

    with open(args.corpus, encoding="utf-8") as f:
        corpus = [json.loads(line) for line in f]

    # The target's usage domain, by whole pages: usage, held-out text, multiple choice.
    usage_pages = collections.defaultdict(list)
    for r in corpus:
        if r["language"] == TARGET and r["domain"] == USAGE_DOMAIN:
            usage_pages[page_of(r)].append(r)
    pages = sorted(usage_pages)
    rng.shuffle(pages)
    usage, heldout, mc = [], [], []
    for p in pages:
        recs = usage_pages[p]
        if len(usage) < USAGE_RECORDS:
            usage += recs
        elif len(heldout) < HELDOUT_RECORDS:
            heldout += recs
        elif len(mc) < MC_ITEMS * 2:
            mc += [r for r in recs if len(r["text"]) >= MC_MIN_CHARS]
    if len(mc) < MC_ITEMS:
        sys.exit(f"task: only {len(mc)} passages for the multiple-choice set, want {MC_ITEMS}")
    rng.shuffle(mc)
    items = multiple_choice(mc, rng)

    data = [r for r in corpus if r["language"] == TARGET and r["domain"] in DATA_DOMAINS]

    # The pool: other languages, a capped random sample of each (language, domain).
    groups = collections.defaultdict(list)
    for r in corpus:
        if r["language"] != TARGET:
            groups[(r["language"], r["domain"])].append(r)
    pool = []
    for key in sorted(groups):
        g = groups[key]
        pool += rng.sample(g, min(len(g), POOL_CAP[key[1]]))
    pool_ids = {r["source"] for r in pool}

    # Pretraining: everything else, without any Ukrainian technical text.
    pretrain = [r for r in corpus if r["source"] not in pool_ids
                and not (r["language"] == TARGET and r["domain"] == USAGE_DOMAIN)]

    strip = lambda r: {"text": r["text"], "language": r["language"], "domain": r["domain"], "source": r["source"]}
    write_jsonl(os.path.join(args.out, "pool.jsonl"), [strip(r) for r in pool])
    write_jsonl(os.path.join(args.out, f"{TARGET}-data.jsonl"), [strip(r) for r in data])
    write_jsonl(os.path.join(args.out, f"{TARGET}-usage.jsonl"), [strip(r) for r in usage])
    write_jsonl(os.path.join(args.out, f"{TARGET}-heldout.jsonl"), [{"text": r["text"]} for r in heldout[:HELDOUT_KEEP]])
    write_jsonl(os.path.join(args.out, "mc", TARGET, "test.jsonl"), items)
    write_jsonl(args.pretrain, pretrain)

    counts = collections.Counter(f"{r['language']}/{r['domain']}" for r in pool)
    answers = collections.Counter(it["answer"] for it in items)
    summary = {
        "pool": len(pool), "pool_by_group": dict(sorted(counts.items())),
        "data": len(data), "usage": len(usage), "heldout": min(len(heldout), HELDOUT_KEEP), "mc": len(items),
        "mc_answers": dict(sorted(answers.items())), "pretrain": len(pretrain),
        "usage_pages": len({page_of(r) for r in usage}), "heldout_pages": len({page_of(r) for r in heldout}),
        "mc_pages": len({page_of(r) for r in mc}),
    }
    with open(os.path.join(HERE, "build", "task-summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"task: pool {len(pool)}, D_t {len(data)}, E_t {len(usage)}, held-out {min(len(heldout), HELDOUT_KEEP)}, "
          f"MC {len(items)} {dict(sorted(answers.items()))}, pretrain {len(pretrain)}", file=sys.stderr)


if __name__ == "__main__":
    main()
