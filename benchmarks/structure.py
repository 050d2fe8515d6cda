"""Structure figures of the `rlaif` package, printed side by side with a reference commit.

    python benchmarks/structure.py            # this checkout
    python benchmarks/structure.py --base REV # this checkout and REV (read with `git show`)

Prints: modules directly in `rlaif/`, the longest functions (lines, including nested ones),
functions over 60 lines, and import cycles between `rlaif` modules (module-level imports only;
imports inside functions are deliberate late imports and do not make a cycle at import time,
but they are listed apart). Duplicated blocks come from the `duplicates` tool, not from here.
"""
from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path


def sources(root: Path, rev: str | None) -> dict[str, str]:
    """Module name -> source for every `rlaif/**.py`, from the working tree or from `rev`."""
    if rev is None:
        files = {p.relative_to(root).as_posix(): p.read_text() for p in (root / "rlaif").rglob("*.py")}
    else:
        names = subprocess.run(["git", "-C", str(root), "ls-tree", "-r", "--name-only", rev, "rlaif/"],
                               check=True, capture_output=True, text=True).stdout.split()
        files = {n: subprocess.run(["git", "-C", str(root), "show", f"{rev}:{n}"], check=True,
                                   capture_output=True, text=True).stdout
                 for n in names if n.endswith(".py")}
    out = {}
    for path, text in files.items():
        mod = path[:-3].replace("/", ".")
        out[mod.removesuffix(".__init__")] = text
    return out


def functions(tree: ast.AST) -> list[tuple[int, str, int]]:
    """(length in lines, qualified name, first line) of every function and method."""
    found = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                found.append((child.end_lineno - child.lineno + 1, name, child.lineno))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def imports(mod: str, tree: ast.Module, known: set[str], top_level_only: bool) -> set[str]:
    """The `rlaif` modules that `mod` imports (at module level, or anywhere)."""
    package = mod if _is_package(mod, known) else mod.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # `if TYPE_CHECKING:` blocks do not run
        nodes = [n for n in nodes if not (isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test))]
        nodes = [s for n in nodes for s in ast.walk(n)
                 if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))] + \
                [s for n in nodes if isinstance(n, ast.ClassDef) for s in n.body
                 if isinstance(s, (ast.Import, ast.ImportFrom))]
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for a in node.names:
                if f"{base}.{a.name}" in known:
                    out.add(f"{base}.{a.name}")
                elif base in known:
                    out.add(base)
    out.discard(mod)
    return out


def _is_package(mod: str, known: set[str]) -> bool:
    return any(k.startswith(mod + ".") for k in known)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            strong(v)
    return out


def figures(src: dict[str, str]) -> dict:
    trees = {m: ast.parse(t) for m, t in src.items()}
    known = set(src)
    # a package's `__init__` importing its own submodules is how packages are built, not a cycle
    def graph(top):
        return {m: {d for d in imports(m, t, known, top) if not d.startswith(m + ".")}
                for m, t in trees.items()}
    funcs = sorted(((n, f"{m}.{name}", line) for m, t in trees.items() for n, name, line in functions(t)),
                   reverse=True)
    return {
        "top_level_modules": sorted(m for m in src if m.count(".") == 1 and not _is_package(m, known)),
        "longest": funcs[:8],
        "over_60": [f for f in funcs if f[0] > 60],
        "cycles_module_level": cycles(graph(True)),
        "cycles_any_import": cycles(graph(False)),
    }


def show(label: str, f: dict) -> None:
    print(f"== {label}")
    print(f"modules directly in rlaif/: {len(f['top_level_modules'])}")
    print(f"functions over 60 lines: {len(f['over_60'])}")
    for n, name, _ in f["longest"][:5]:
        print(f"  {n:4d}  {name}")
    print(f"import cycles (module level): {len(f['cycles_module_level'])}")
    for c in f["cycles_module_level"]:
        print("  " + " <-> ".join(c))
    print(f"import cycles (counting imports inside functions): {len(f['cycles_any_import'])}")
    for c in f["cycles_any_import"]:
        print("  " + " <-> ".join(c))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", help="a commit to print beside this checkout")
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[1]
    if args.base:
        show(f"base {args.base}", figures(sources(root, args.base)))
    show("this checkout", figures(sources(root, None)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
