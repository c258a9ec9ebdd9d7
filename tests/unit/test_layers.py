"""The layering of shieldkit's modules: no import cycle, no private import across modules.

A small import-graph checker, standard library only (``ast``, ``pathlib``), reads
every ``.py`` under a package folder without importing anything. An edge
``a -> b`` means module ``a`` names module ``b`` in:

* ``import a.b`` (an edge to ``a.b``);
* ``from a.b import c`` (an edge to ``a.b.c`` when that is a module of the
  package, else to ``a.b``), relative imports resolved;
* ``importlib.import_module("a.b")`` with a string literal;
* and, in a module that calls ``importlib.import_module`` with anything else
  (a name, an f-string), every string constant of that module that names a
  module of the package, alone or after the constant prefix of such an
  f-string (``f"shieldkit.{name}"`` with ``"data"`` in a table names
  ``shieldkit.data``): that is how tables of module names are loaded. A string
  passed straight to another call (``getLogger("a.x")``) is not a table entry.

Imports inside functions count (a lazy import still imports back). Ancestor
packages that Python runs implicitly (``import a.b.c`` runs ``a/__init__`` and
``a/b/__init__``) are not edges: only the module an import names is. Only edges
between modules of the package count.

Rules:

* no cycle: every strongly connected component of the graph is a single module;
* no private name (``_x``, not dunder) imported from another module;
* a private module (a dotted-path segment starting with ``_``, like
  ``shieldkit.attacks._losses``) is imported only by modules inside the
  package folder that holds it (``shieldkit.attacks.*``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "shieldkit"


# --------------------------------------------------------------------------- the checker


@dataclass(frozen=True)
class Edge:
    """Module ``source`` imports module ``target`` at ``file:line`` (``how`` says by what)."""

    source: str
    target: str
    file: Path
    line: int
    how: str
    names: tuple[str, ...] = ()  # for ``from target import names``: the names taken from target

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def find_modules(root: Path) -> dict[str, Path]:
    """Every module under the package folder ``root``, by dotted name (``a/b/__init__.py`` is ``a.b``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _package_of(module: str, path: Path) -> str:
    """The package a relative import in ``module`` starts from."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _resolve_relative(module: str, path: Path, level: int, name: str | None) -> str:
    base = _package_of(module, path)
    for _ in range(level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{name}" if name else base


def _is_import_module(call: ast.Call) -> bool:
    """``importlib.import_module(...)`` or ``import_module(...)``."""
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module" and isinstance(func.value, ast.Name) and func.value.id == "importlib"
    return isinstance(func, ast.Name) and func.id == "import_module"


def _constant_prefix(node: ast.expr) -> str:
    """The literal text an f-string (or ``"a." + x``) starts with; ``""`` for anything else."""
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = node.left
        if isinstance(left, ast.Constant) and isinstance(left.value, str):
            return left.value
    return ""


def _string_constants(tree: ast.AST) -> list[ast.Constant]:
    """The string constants of a module that could be entries of a table of module names.

    Not the literal parts of f-strings, and not a string handed straight to a call
    other than ``import_module`` (``getLogger("a.x")``, ``version("a")``): that is
    the argument of that function, not an entry of a table.
    """
    excluded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            excluded |= {id(value) for value in node.values}
        elif isinstance(node, ast.Call) and not _is_import_module(node):
            excluded |= {id(arg) for arg in node.args} | {id(k.value) for k in node.keywords}
    return [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in excluded
    ]


def module_edges(module: str, path: Path, modules: dict[str, Path], label: Path | None = None) -> list[Edge]:
    """The edges out of one module, to modules of the package only."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    file = label or path
    edges: list[Edge] = []

    def add(target: str, line: int, how: str, names: tuple[str, ...] = ()) -> None:
        if target in modules and target != module:  # a module naming itself imports nothing
            edges.append(Edge(module, target, file, line, how, names))

    dynamic_prefixes: set[str] = set()
    dynamic_lines: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve_relative(module, path, node.level, node.module)
            else:
                base = node.module or ""
            statement = f"from {'.' * node.level}{node.module or ''} import"
            from_base = []
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if alias.name != "*" and submodule in modules:
                    add(submodule, node.lineno, f"{statement} {alias.name}")
                else:
                    from_base.append(alias.name)
            if from_base:
                add(base, node.lineno, f"{statement} {', '.join(from_base)}", tuple(from_base))
        elif isinstance(node, ast.Call) and _is_import_module(node) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                target = arg.value
                if target.startswith("."):
                    level = len(target) - len(target.lstrip("."))
                    target = _resolve_relative(module, path, level, target.lstrip(".") or None)
                add(target, node.lineno, f"importlib.import_module({arg.value!r})")
            else:
                dynamic_prefixes.add(_constant_prefix(arg))
                dynamic_lines.append(node.lineno)
    if dynamic_lines:
        dynamic_prefixes.add("")
        calls = ", ".join(str(n) for n in sorted(dynamic_lines))
        for constant in _string_constants(tree):
            for prefix in sorted(dynamic_prefixes):
                add(prefix + constant.value, constant.lineno,
                    f"{constant.value!r} loaded by importlib.import_module (line {calls})")
    return edges


def import_graph(root: Path) -> tuple[dict[str, Path], list[Edge]]:
    """The modules of the package folder ``root`` and every edge between them."""
    modules = find_modules(root)
    edges = []
    for module, path in modules.items():
        edges += module_edges(module, path, modules, label=path.relative_to(root.parent))
    return modules, edges


def strongly_connected(nodes: list[str], edges: list[Edge]) -> list[list[str]]:
    """Tarjan's strongly connected components, each sorted, in a stable order."""
    successors: dict[str, list[str]] = {n: [] for n in nodes}
    for edge in edges:
        successors[edge.source].append(edge.target)
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in successors[node]:
            if succ not in index:
                visit(succ)
                lowlink[node] = min(lowlink[node], lowlink[succ])
            elif succ in on_stack:
                lowlink[node] = min(lowlink[node], index[succ])
        if lowlink[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return sorted(components)


def _shortest_cycle(start: str, component: set[str], out: dict[str, list[Edge]]) -> list[Edge]:
    """The shortest chain of edges from ``start`` back to itself, inside one component."""
    previous: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in out.get(node, []):
                if edge.target not in component or edge.target in previous:
                    continue
                previous[edge.target] = edge
                if edge.target == start:
                    chain = [edge]
                    while chain[0].source != start:
                        chain.insert(0, previous[chain[0].source])
                    return chain
                following.append(edge.target)
        frontier = following
    return []


def find_cycles(root: Path) -> list[list[Edge]]:
    """Import cycles of the package: for each component, the shortest cycle through each of its modules."""
    modules, edges = import_graph(root)
    out: dict[str, list[Edge]] = {}
    for edge in sorted(edges, key=lambda e: (e.source, e.target, e.line)):
        out.setdefault(edge.source, []).append(edge)
    cycles: list[list[Edge]] = []
    seen: set[frozenset[tuple[str, str]]] = set()
    for component in strongly_connected(list(modules), edges):
        if len(component) == 1:  # no self-edges: a module naming itself imports nothing
            continue
        members = set(component)
        for start in component:
            chain = _shortest_cycle(start, members, out)
            key = frozenset((e.source, e.target) for e in chain)
            if chain and key not in seen:
                seen.add(key)
                cycles.append(chain)
    return cycles


def describe_cycle(chain: list[Edge]) -> str:
    """``a -> b -> a`` and, under it, where each import is."""
    header = " -> ".join([chain[0].source] + [e.target for e in chain])
    lines = [f"    {e.where()}: {e.source} -> {e.target} ({e.how})" for e in chain]
    return "\n".join([header, *lines])


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(root: Path) -> list[str]:
    """Private names imported from another module, and private modules imported from outside their folder."""
    _, edges = import_graph(root)
    problems = []
    for edge in sorted(edges, key=lambda e: (str(e.file), e.line, e.target)):
        for name in edge.names:
            if _private(name):
                problems.append(f"{edge.where()}: {edge.source} imports the private name {name!r} "
                                f"from {edge.target}")
        parts = edge.target.split(".")
        private_at = [i for i, part in enumerate(parts) if _private(part)]
        if private_at:
            folder = ".".join(parts[: private_at[-1]])  # the package folder holding the private part
            if edge.source != folder and not edge.source.startswith(folder + "."):
                problems.append(f"{edge.where()}: {edge.source} imports the private module {edge.target} "
                                f"(only modules of {folder}.* may)")
    return problems


# --------------------------------------------------------------------------- the real package


def test_shieldkit_has_no_import_cycle():
    cycles = find_cycles(PACKAGE)
    assert not cycles, "import cycles in shieldkit:\n" + "\n".join(describe_cycle(c) for c in cycles)


def test_shieldkit_has_no_private_cross_module_import():
    problems = private_imports(PACKAGE)
    assert not problems, "private cross-module imports in shieldkit:\n" + "\n".join(problems)


# --------------------------------------------------------------------------- the checker itself


def write_package(tmp_path: Path, files: dict[str, str]) -> Path:
    """Write ``{"a/x.py": source, ...}`` under tmp_path; returns the folder of package ``a``."""
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return tmp_path / "a"


def test_a_function_level_import_back_is_a_cycle(tmp_path):
    root = write_package(tmp_path, {
        "a/__init__.py": "",
        "a/x.py": "def f():\n    import a.y\n    return a.y\n",
        "a/y.py": "from a.x import f\n",
    })
    cycles = find_cycles(root)
    assert [describe_cycle(c).splitlines()[0] for c in cycles] == ["a.x -> a.y -> a.x"]
    assert [(e.file.as_posix(), e.line) for e in cycles[0]] == [("a/x.py", 2), ("a/y.py", 1)]


def test_a_cycle_through_importlib_and_a_table_of_names_is_found(tmp_path):
    root = write_package(tmp_path, {
        "a/__init__.py": "import importlib\n_LAZY = ('sub',)\n"
                         "def __getattr__(name):\n    return importlib.import_module(f'a.{name}')\n",
        "a/sub.py": "import a\nVERSION = a.__version__\n",
        "a/cli.py": "import importlib\nCOMMANDS = {'run': 'a.runner'}\n"
                    "def load(name):\n    return importlib.import_module(COMMANDS[name])\n",
        "a/runner.py": "from . import cli\n",
        "a/plain.py": "import importlib\nimportlib.import_module('a.cli')\n",
        "a/other.py": "import importlib, logging\nfrom a import plain\nlog = logging.getLogger('a.plain')\n"
                      "def load(name):\n    return importlib.import_module(name)\n",
    })
    heads = sorted(describe_cycle(c).splitlines()[0] for c in find_cycles(root))
    assert heads == ["a -> a.sub -> a", "a.cli -> a.runner -> a.cli"]


def test_implicit_parent_packages_are_not_edges(tmp_path):
    # a.x imports a.b.c, which runs a/b/__init__ (which imports a.x): no cycle, since
    # a/b/__init__ runs first and a.b.c never imports a.b or a.x by name.
    root = write_package(tmp_path, {
        "a/__init__.py": "from a.x import f\n",
        "a/x.py": "import a.b.c\ndef f():\n    return a.b.c\n",
        "a/b/__init__.py": "from a.x import f\n",
        "a/b/c.py": "from a.y import g\n",
        "a/y.py": "def g():\n    pass\n",
    })
    assert find_cycles(root) == []
    _, edges = import_graph(root)
    assert sorted((e.source, e.target) for e in edges) == [
        ("a", "a.x"), ("a.b", "a.x"), ("a.b.c", "a.y"), ("a.x", "a.b.c"),
    ]


def test_from_package_import_submodule_is_an_edge_to_the_submodule(tmp_path):
    root = write_package(tmp_path, {
        "a/__init__.py": "",
        "a/b/__init__.py": "from a.b import c\nfrom .c import thing\nfrom .. import y\n",
        "a/b/c.py": "thing = 1\n",
        "a/y.py": "import os\nfrom a.b import thing\n",
    })
    _, edges = import_graph(root)
    assert sorted((e.source, e.target) for e in edges) == [
        ("a.b", "a.b.c"), ("a.b", "a.b.c"), ("a.b", "a.y"), ("a.y", "a.b"),
    ]
    assert [describe_cycle(c).splitlines()[0] for c in find_cycles(root)] == ["a.b -> a.y -> a.b"]


def test_a_private_name_imported_from_another_module_is_reported(tmp_path):
    root = write_package(tmp_path, {
        "a/__init__.py": "",
        "a/x.py": "def _helper():\n    pass\n__all__ = []\n",
        "a/y.py": "from a.x import _helper\nfrom a.x import __all__\n",
    })
    assert private_imports(root) == ["a/y.py:1: a.y imports the private name '_helper' from a.x"]


def test_a_private_module_is_imported_only_from_its_own_folder(tmp_path):
    root = write_package(tmp_path, {
        "a/__init__.py": "",
        "a/b/__init__.py": "from a.b import _impl\n",
        "a/b/_impl.py": "value = 1\n",
        "a/b/user.py": "from a.b._impl import value\n",
        "a/b/deep/__init__.py": "from .._impl import value\n",
        "a/outside.py": "def f():\n    from a.b._impl import value\n    return value\n",
    })
    assert private_imports(root) == [
        "a/outside.py:2: a.outside imports the private module a.b._impl (only modules of a.b.* may)",
    ]


#: The layers, lowest first (docs/architecture.md, "Imports flow one way"): a module imports only modules of
#: its own layer or of a lower one. ``infra`` sits beside ``core`` (torch only); the package root's own
#: modules (``__init__``, the conformance kit and its exemptions) sit on top and are not checked.
LAYERS = [
    ("shieldkit.core", "shieldkit.infra", "shieldkit.version"),
    ("shieldkit.plugins",),
    ("shieldkit.attacks", "shieldkit.defenses", "shieldkit.gan", "shieldkit.backends", "shieldkit.models",
     "shieldkit.data", "shieldkit.diagnosis", "shieldkit.escalation"),
    ("shieldkit.evaluation",),
    ("shieldkit.cli",),
]


def layer_of(module: str) -> int | None:
    for level, prefixes in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return level
    return None


def test_imports_flow_one_way_through_the_layers():
    _, edges = import_graph(PACKAGE)
    upward = [f"{edge.where()}: {edge.source} (layer {layer_of(edge.source)}) imports {edge.target} "
              f"(layer {layer_of(edge.target)})" for edge in edges
              if layer_of(edge.source) is not None and layer_of(edge.target) is not None
              and layer_of(edge.target) > layer_of(edge.source)]
    assert not upward, "an import against the layers:\n" + "\n".join(upward)
    core = [f"{edge.where()}: {edge.source} imports {edge.target}" for edge in edges
            if edge.source.startswith("shieldkit.core") and not edge.target.startswith("shieldkit.core")]
    assert not core, "shieldkit.core imports nothing else of shieldkit:\n" + "\n".join(core)
