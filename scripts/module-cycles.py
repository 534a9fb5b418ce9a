#!/usr/bin/env python3
"""Finds module cycles inside each crate: module A uses module B and B uses A.

A module's uses are the `crate::…` and `super::…` paths in its file (doc comments
and tests are read too: a test that reaches into a sibling is still an edge, since
it couples the two). Each edge is lifted to the two sibling modules under the lowest
module holding both, so `a::x` using `b::y` is an edge a → b; a child using its own
ancestor (`super::Item` from a submodule) is how Rust declares shared items and is
not counted. Prints every strongly connected group of more than one module and exits
1 if there is any.

Usage: scripts/module-cycles.py [CRATE_DIR...]   (default: every crates/*)
"""

import pathlib
import re
import sys

PATH_RE = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
BRACE_RE = re.compile(r"\b(crate|super)::\{([^}]*)\}", re.S)


def module_of(src: pathlib.Path, file: pathlib.Path) -> tuple:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def referenced_paths(text: str, here: tuple):
    """Absolute module paths (as tuples of names) this file's text refers to."""
    found = []
    for root, rest in PATH_RE.findall(text):
        found.append((root, rest.strip(":").split("::")))
    for root, inner in BRACE_RE.findall(text):
        for item in inner.split(","):
            item = item.strip().split(" as ")[0].strip()
            if item and re.match(r"^[A-Za-z_][A-Za-z0-9_:]*$", item):
                found.append((root, item.split("::")))
    for root, names in found:
        if root == "crate":
            yield names
        else:
            base = list(here)
            while names and names[0] == "super":
                names = names[1:]
                base = base[:-1]
            yield base + names


def crate_graph(crate: pathlib.Path):
    src = crate / "src"
    files = {module_of(src, f): f for f in sorted(src.rglob("*.rs"))}
    modules = set(files)
    edges = {}
    for here, file in files.items():
        text = strip_comments(file.read_text())
        for path in referenced_paths(text, here):
            # The longest prefix that names a module of this crate.
            target = None
            for length in range(len(path), -1, -1):
                if tuple(path[:length]) in modules:
                    target = tuple(path[:length])
                    break
            if target is None or target == here:
                continue
            common = 0
            while (
                common < min(len(here), len(target)) and here[common] == target[common]
            ):
                common += 1
            if common == len(here) or common == len(target):
                continue  # ancestor and descendant
            a, b = here[: common + 1], target[: common + 1]
            edges.setdefault(a, set()).add(b)
    return edges


def cycles(edges):
    """Tarjan's strongly connected components with more than one member."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in list(edges):
        if node not in index:
            visit(node)
    return groups


def main() -> int:
    root = pathlib.Path(__file__).resolve().parent.parent
    crates = [pathlib.Path(a) for a in sys.argv[1:]] or sorted(
        p for p in (root / "crates").iterdir() if (p / "src").is_dir()
    )
    found = 0
    for crate in crates:
        edges = crate_graph(crate)
        for group in cycles(edges):
            found += 1
            names = ["::".join(m) for m in group]
            print(f"{crate.name}: cycle among {', '.join(names)}")
            for a in group:
                for b in sorted(edges.get(a, ())):
                    if b in group:
                        print(f"    {'::'.join(a)} -> {'::'.join(b)}")
    if found:
        print(f"{found} module cycle(s)")
        return 1
    print(f"no module cycles in {len(crates)} crate(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
