"""mutation_texts.py NAME FILE TEXT [NAME FILE TEXT ...]: checks that each
mutation's text (scripts/mutations.sh, scripts/emu-mutations.sh) occurs
exactly once in its file, as the scripts need to plant it. Prints each one
that does not (STALE: the source changed under it) and exits 1 if any;
`make check` runs it through the scripts' -c option, so that a mutation
goes stale in the commit that changes its source, not in a later run."""
import sys

args = sys.argv[1:]
if len(args) % 3 != 0 or not args:
    sys.exit("usage: mutation_texts.py NAME FILE TEXT [NAME FILE TEXT ...]")
stale = 0
for i in range(0, len(args), 3):
    name, path, text = args[i : i + 3]
    try:
        count = open(path, encoding="utf-8").read().count(text)
    except OSError as e:
        count, why = 0, str(e)
    else:
        why = f"{count} occurrences in {path}"
    if count != 1:
        print(f"STALE     {name}: its text must occur once ({why}): update the mutation")
        stale = 1
print(f"{len(args) // 3} mutations' texts checked" + (", some stale" if stale else ""))
sys.exit(stale)
