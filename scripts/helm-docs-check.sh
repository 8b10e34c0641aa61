#!/usr/bin/env bash
# Regenerate (--write) or check (default) the values table in docs/helm.md from
# charts/airgate/values.yaml. A key is documented by a `# -- text` comment on
# the line(s) right above it; its whole value is its default. Keys without such
# a comment are descended into. Needs python3 with PyYAML.
#
# The same drift check runs without python in `cargo test --test helm_chart`.
#
# Usage: scripts/helm-docs-check.sh [--write]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE="${1:-check}"
exec python3 - "$ROOT/charts/airgate/values.yaml" "$ROOT/docs/helm.md" "$MODE" <<'PY'
import json, re, sys
import yaml

values_path, doc_path, mode = sys.argv[1:4]
lines = open(values_path).read().splitlines()
data = yaml.safe_load("\n".join(lines))

rows, stack, pending = [], [], []   # stack: [(indent, key)]
key_re = re.compile(r'^(\s*)([A-Za-z0-9_]+):(.*)$')
for line in lines:
    s = line.strip()
    if s.startswith("# --"):
        pending = [s[4:].strip()]
        continue
    if s.startswith("#") and pending:
        pending.append(s[1:].strip())
        continue
    m = key_re.match(line)
    if not m:
        pending = [] if not s else pending
        continue
    indent, key = len(m.group(1)), m.group(2)
    while stack and stack[-1][0] >= indent:
        stack.pop()
    path = [k for _, k in stack] + [key]
    stack.append((indent, key))
    if pending:
        v = data
        for k in path:
            v = v[k]
        default = json.dumps(v, sort_keys=True, separators=(",", ":"))
        rows.append("| `%s` | `%s` | %s |" % (".".join(path), default, " ".join(pending).replace("|", "\\|")))
    pending = []

table = "\n".join(["| Key | Default | Meaning |", "| --- | --- | --- |"] + rows)
begin, end = "<!-- values-table:begin -->", "<!-- values-table:end -->"
doc = open(doc_path).read()
i, j = doc.index(begin) + len(begin), doc.index(end)
new = doc[:i] + "\n" + table + "\n" + doc[j:]
if mode == "--write":
    open(doc_path, "w").write(new)
    print("wrote %d rows to %s" % (len(rows), doc_path))
elif new != doc:
    sys.exit("docs/helm.md is out of date with values.yaml; run scripts/helm-docs-check.sh --write")
else:
    print("docs/helm.md is up to date (%d values)" % len(rows))
PY
