#!/usr/bin/env python3
"""Checks the layering of src/: prints the import graph between top-level modules and fails on
an arrow that runs back up into `api` or on any import circle (issue 11)."""
import collections
import glob
import re
import sys

edges = collections.defaultdict(set)
for path in glob.glob("src/**/*.rs", recursive=True):
    top = path[4:].split("/")[0].removesuffix(".rs")
    text = open(path).read()
    text = re.sub(r"#\[cfg\(test\)\]\s*mod tests \{.*", "", text, flags=re.S)  # unit tests may reach anywhere
    text = "\n".join(line for line in text.split("\n") if not line.strip().startswith("//"))
    for match in re.finditer(r"crate::(\w+)", text):
        if match.group(1) != top:
            edges[top].add(match.group(1))

def reaches(start, goal):
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for nxt in edges.get(node, ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False

for module in sorted(edges):
    print(f"{module} -> {', '.join(sorted(edges[module]))}")
wrong = [f"{a} -> api" for a in edges if "api" in edges[a] and a not in ("startup", "lib", "main")]
wrong += [f"{a} -> {b} (circle)" for a in list(edges) for b in list(edges[a]) if reaches(b, a)]
if wrong:
    print("layering broken:", *wrong, sep="\n  ")
    sys.exit(1)
print("no arrow runs back up into api, no import circle")
