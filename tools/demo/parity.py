#!/usr/bin/python3
"""Checks that compass scores the demo model as the PyTorch reference does: the same token ids
(compass tokenize) scored by `compass score` and by tools/reference/reference.py forward (float32),
log-probability by log-probability.

    parity.py --compass bin/compass [--model testdata/demo/model] [--text testdata/demo/task/uk-heldout.jsonl]
              [--lines 8] [--tolerance 1e-3]

Prints the largest difference and exits 1 when it exceeds the tolerance.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools", "reference"))
import safetensors_io  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compass", required=True)
    ap.add_argument("--model", default=os.path.join(REPO, "testdata", "demo", "model"))
    ap.add_argument("--text", default=os.path.join(REPO, "testdata", "demo", "task", "uk-heldout.jsonl"))
    ap.add_argument("--lines", type=int, default=8)
    ap.add_argument("--tolerance", type=float, default=1e-3)
    args = ap.parse_args()

    with open(args.text, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()][:args.lines]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "text.jsonl")
        with open(src, "w", encoding="utf-8") as f:
            for t in texts:
                f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
        with open(src, encoding="utf-8") as stdin:
            out = subprocess.run([args.compass, "tokenize", "--tokenizer", args.model, "--jsonl", "--special"],
                                 stdin=stdin, check=True, capture_output=True, text=True).stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        rows = [r["ids"] if isinstance(r, dict) else r for r in rows]
        ids_file = os.path.join(tmp, "ids.jsonl")
        with open(ids_file, "w") as f:
            for ids in rows:
                f.write(json.dumps({"ids": ids}) + "\n")
        scored = subprocess.run([args.compass, "score", "--model", args.model, "--input", ids_file, "--device", "cpu"],
                                check=True, capture_output=True, text=True).stdout
        ours = [json.loads(line)["logprobs"] for line in scored.splitlines() if line.strip()]

        worst, count = 0.0, 0
        for i, ids in enumerate(rows):
            inp = os.path.join(tmp, f"in{i}.json")
            with open(inp, "w") as f:
                json.dump({"input_ids": [ids], "labels": [ids[1:] + [-100]]}, f)
            res = os.path.join(tmp, f"out{i}.safetensors")
            subprocess.run([sys.executable, os.path.join(REPO, "tools", "reference", "reference.py"), "forward",
                            "--model", args.model, "--input", inp, "--output", res, "--dtype", "float32"], check=True)
            ref = safetensors_io.load(res)[0]["logprobs"][0, :-1].tolist()
            if len(ref) != len(ours[i]):
                sys.exit(f"parity: line {i + 1}: {len(ours[i])} log-probs from compass, {len(ref)} from the reference")
            for a, b in zip(ours[i], ref):
                worst = max(worst, abs(a - b))
                count += 1
    print(f"parity: {len(rows)} lines, {count} log-probs, largest difference {worst:.2e} (tolerance {args.tolerance:g})")
    sys.exit(0 if worst <= args.tolerance else 1)


if __name__ == "__main__":
    main()
