"""The import graph of brainrl/: no cycles between modules, and packages import only what docs/design.md
allows (stimulus → brain → rewards → policy → evaluation → train; cortex and report are leaves)."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "brainrl"

BASE = {"", "provenance", "registry", "configs"}  # "" is the brainrl package itself (__version__)
#: package -> the brainrl packages it may import (besides itself and BASE)
ALLOWED = {
    "provenance": set(), "registry": set(), "configs": {"registry"},
    "cortex": set(),
    "report": {"cortex"},
    "stimulus": set(),
    "brain": {"stimulus", "cortex"},
    "rewards": {"brain", "stimulus", "cortex"},
    "policy": set(),
    "evaluation": {"policy", "rewards", "brain", "stimulus", "cortex", "report"},
    "train": {"evaluation", "policy", "rewards", "brain", "stimulus", "cortex", "report"},
    "sbi": {"evaluation", "policy", "rewards", "brain", "stimulus", "cortex", "report"},
    "cli": None, "__main__": None,  # entry points (and every ``__main__`` module): anything
    "errors": None,  # how entry points report a user's mistake; only entry points import it
}


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> brainrl modules it imports anywhere in its body (lazy and TYPE_CHECKING imports included:
    a cycle hidden inside a function is still a cycle)."""
    mods = modules()
    graph = {}
    for name, path in mods.items():
        targets = set()
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                if not base.startswith("brainrl"):
                    continue
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in mods else base)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("brainrl") and a.name in mods}
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_packages_import_in_the_documented_direction():
    bad = []
    for module, targets in import_graph().items():
        if module.endswith(".__main__"):
            continue
        allowed = ALLOWED.get(package_of(module), set())
        if allowed is None:
            continue
        for target in targets:
            pkg = package_of(target)
            if pkg != package_of(module) and pkg not in BASE | allowed:
                bad.append(f"{module} imports {target}")
    assert bad == [], "imports against the layering of docs/design.md:\n" + "\n".join(sorted(bad))


def test_every_package_has_a_rule():
    assert {package_of(m) for m in modules()} - set(ALLOWED) - BASE == set()


#: the layers of brainrl/sbi, read top-down; a layer imports only the layers before it (and the package root)
SBI_LAYERS = ("simulation", "judges", "inference", "diagnostics", "theta")


def sbi_layer(module: str) -> str | None:
    """The sbi layer of a module (None for the package root ``brainrl.sbi``, '?' for a module in none)."""
    parts = module.split(".")
    if parts[:2] != ["brainrl", "sbi"]:
        return None
    if len(parts) == 2:
        return None
    return parts[2] if parts[2] in SBI_LAYERS else "?"


def sbi_layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in graph.items():
        layer = sbi_layer(module)
        if layer is None and module == "brainrl.sbi":
            allowed = {"simulation"}  # the package root re-exports the prior and topics only
        elif layer is None:
            continue
        elif layer == "?":
            bad.append(f"{module} is in no sbi layer {SBI_LAYERS}")
            continue
        else:
            allowed = set(SBI_LAYERS[: SBI_LAYERS.index(layer) + 1])
        for target in targets:
            if target.startswith("brainrl.sbi.") and sbi_layer(target) not in allowed:
                bad.append(f"{module} imports {target}")
    return sorted(bad)


def test_sbi_layers_import_one_way():
    bad = sbi_layer_violations(import_graph())
    assert bad == [], "imports against the sbi layer order " + " → ".join(SBI_LAYERS) + ":\n" + "\n".join(bad)


def test_sbi_layer_rule_catches_an_upward_import():
    graph = {"brainrl.sbi.simulation.campaign": {"brainrl.sbi.inference.estimator"},
             "brainrl.sbi.theta.reward": {"brainrl.sbi.simulation.prior"},
             "brainrl.sbi.stray": set()}
    assert sbi_layer_violations(graph) == [
        "brainrl.sbi.simulation.campaign imports brainrl.sbi.inference.estimator",
        "brainrl.sbi.stray is in no sbi layer ('simulation', 'judges', 'inference', 'diagnostics', 'theta')"]


def test_only_entry_points_import_errors():
    users = {m for m, targets in import_graph().items() if "brainrl.errors" in targets}
    assert all(package_of(m) == "cli" or m.endswith(".__main__") for m in users), users
