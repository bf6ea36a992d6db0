"""The package's layering (CONTRIBUTING.md): no import cycle among its modules, and each layer
imports only the layers below it. Imports are read with ast (module level and inside
functions alike), so a lazy import cannot hide a cycle."""

import ast
from pathlib import Path

import triton_softmax

PKG = Path(triton_softmax.__file__).parent
NAME = "triton_softmax"

# layer -> the package modules (prefixes) it may import; checked for the bottom layers
ALLOWED = {
    "reference": ("reference",),
    "kernels": ("kernels",),
    "checks": (),
    "samplers": (),
    "nonfinite": (),
    "ops": ("reference", "kernels"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([NAME, *parts])] = path
    return out


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `module` imports (relative and absolute, anywhere in the file)."""
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:
                    found.add(sub)
                elif target in known:
                    found.add(target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    found.add(alias.name)
    found.discard(module)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(m, p, known) for m, p in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_imports():
    """The walker finds known edges (so an empty cycle list means something)."""
    g = _graph()
    assert f"{NAME}.ops" in g[f"{NAME}.autograd"]
    assert f"{NAME}.reference.sampled_logits" in g[f"{NAME}.ops"]
    assert f"{NAME}.index.manager" in g[f"{NAME}.loss"]


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_package_modules():
    graph = _graph()
    # the package root imports everything (the public API); nothing may import it back
    root = graph.pop(NAME)
    assert root
    for m, deps in graph.items():
        assert NAME not in deps, f"{m} imports the package root"
    assert _cycles(graph) == []


def test_bottom_layers_import_only_below_them():
    graph = _graph()
    for module, deps in graph.items():
        rel = module[len(NAME) + 1 :]
        layer = rel.split(".")[0] if rel else ""
        if layer not in ALLOWED:
            continue
        allowed = (layer, *ALLOWED[layer])
        bad = [d for d in deps if d[len(NAME) + 1 :].split(".")[0] not in allowed]
        assert not bad, f"{module} imports {bad}: {layer} may import only {allowed}"


def test_kernels_import_nothing_outside_kernels():
    """kernels/ stands alone: its launchers never call a twin or a helper above them (ops.py
    decides where the twin runs instead), so the kernels can be read, tested and moved alone."""
    graph = _graph()
    inside = f"{NAME}.kernels"
    bad = {
        module: sorted(d for d in deps if d != inside and not d.startswith(inside + "."))
        for module, deps in graph.items()
        if module == inside or module.startswith(inside + ".")
    }
    bad = {module: deps for module, deps in bad.items() if deps}
    assert not bad, f"kernels/ imports from outside kernels/: {bad}"


def test_no_library_module_over_500_lines_outside_kernels():
    long = [
        (str(p.relative_to(PKG)), n)
        for p in PKG.rglob("*.py")
        if "kernels" not in p.parts and (n := len(p.read_text().splitlines())) > 500
    ]
    assert not long, long
