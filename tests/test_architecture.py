"""docs/architecture.md is true: every module of the package is listed where it lives, imports point down the
list only (a module imports only what is listed after it), and nothing imports in a circle."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "src" / "minimind"
ENTRY = re.compile(r"^( *)([\w.]+(?:\.py|/))(?:\s|$)")


def listed_modules() -> list[str]:
    """The dotted module names of docs/architecture.md's first code block, in its order (a folder stands for its
    package's __init__)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("```")[1]
    names, folders = [], []
    for line in block.splitlines():
        m = ENTRY.match(line)
        if not m:
            continue
        depth, entry = len(m[1]) // 2, m[2]
        folders = folders[:depth]
        if entry.endswith("/"):
            folders.append(entry[:-1])
            names.append(".".join(["minimind", *folders]))
        elif entry == "__init__.py":
            names.append(".".join(["minimind", *folders]))
        else:
            names.append(".".join(["minimind", *folders, entry.removesuffix(".py")]))
    return names


def package_modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports anywhere (function bodies too; not under TYPE_CHECKING)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def owner(module: str) -> str:
        while module not in modules:
            module = module.rpartition(".")[0]
        return module

    found = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                self.generic_visit(node)

        def visit_Import(self, node):
            found.update(owner(a.name) for a in node.names if a.name.startswith("minimind"))

        def visit_ImportFrom(self, node):
            module = (package.rsplit(".", node.level - 1)[0] + ("." + node.module if node.module else "")
                      if node.level else node.module or "")
            if module.startswith("minimind"):
                found.update(f"{module}.{a.name}" if f"{module}.{a.name}" in modules else owner(module)
                             for a in node.names)

    Visitor().visit(ast.parse(path.read_text()))
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_every_module_is_listed_once_under_its_folder():
    listed = listed_modules()
    assert len(listed) == len(set(listed)), [n for n in listed if listed.count(n) > 1]
    missing = sorted(set(package_modules()) - set(listed))
    unknown = sorted(set(listed) - set(package_modules()))
    assert not missing, f"modules missing from docs/architecture.md: {missing}"
    assert not unknown, f"docs/architecture.md lists modules that do not exist there: {unknown}"


def test_imports_point_down_the_list():
    order = {name: i for i, name in enumerate(listed_modules())}
    upward = [f"{a} imports {b}" for a, bs in import_graph().items() for b in sorted(bs) if order[b] < order[a]]
    assert not upward, "imports pointing up docs/architecture.md's list:\n" + "\n".join(upward)


def test_no_import_circles():
    graph, state, cycles = import_graph(), {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles
