"""No module reads another's private attributes: `x._name` only on self/cls, or on another
instance of the class that defines `_name` (the object named as that class); no `from m import
_name` of another module's private name. Walks the AST of tunlab/ and plugins/."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ("tunlab", "plugins") for p in (ROOT / d).rglob("*.py"))
# private by name only: the standard library's documented escape hatches and ctypes' protocol
ALLOWED = {"_exit", "_getframe", "_replace", "_asdict", "_fields", "_make", "_name_"}


def private(name: str) -> bool:
    return (
        name.startswith("_") and not name.startswith("__") and not name.endswith("_") and name not in ALLOWED
    )


def defined_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(private names this module defines: attributes, functions, classes, globals; the names of
    the classes it defines)."""
    names: set[str] = set()
    classes: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ClassDef):
            classes.add(n.name)
            names.add(n.name)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(n.name)
        elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
            names.add(n.attr)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            names.add(n.id)
        elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
            names.add(n.target.id)
    return {x for x in names if private(x)}, classes


class Checker(ast.NodeVisitor):
    """`obj._x` is this module's business when the module defines `_x` and obj is not declared
    (a parameter's annotation) as a class of another module."""

    def __init__(self, path: Path, tree: ast.Module) -> None:
        self.path = path
        self.problems: list[str] = []
        self.defined, self.classes = defined_names(tree)
        self.scopes: list[ast.FunctionDef | ast.AsyncFunctionDef] = []

    def where(self, node: ast.AST) -> str:
        return f"{self.path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scopes.append(node)
        self.generic_visit(node)
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def foreign(self, name: str) -> bool:
        """The name is a parameter declared as a class this module does not define."""
        for func in self.scopes:
            for arg in [*func.args.posonlyargs, *func.args.args, *func.args.kwonlyargs]:
                if arg.arg == name and arg.annotation is not None:
                    words = {
                        w for w in ast.unparse(arg.annotation).replace("|", " ").split() if w[:1].isupper()
                    }
                    return bool(words) and not words & (self.classes | {"Self", "None"})
        return False

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if private(node.attr):
            value = node.value
            if (isinstance(value, ast.Name) and value.id in ("self", "cls")) or (
                isinstance(value, ast.Call) and ast.unparse(value.func) == "super"
            ):
                pass
            elif node.attr not in self.defined or (isinstance(value, ast.Name) and self.foreign(value.id)):
                self.problems.append(f"{self.where(node)}: reads {ast.unparse(node)}")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        here = ".".join(self.path.relative_to(ROOT).with_suffix("").parts).removeprefix("plugins.")
        for alias in node.names:
            if private(alias.name) and not here.startswith((node.module or "") + "."):
                if is_internal_module(f"{node.module}.{alias.name}"):
                    continue  # an internal module: tunlab's own, not one module's private name
                self.problems.append(f"{self.where(node)}: imports {alias.name} from {node.module}")


def is_internal_module(dotted: str) -> bool:
    """tunlab.x._y (or pytest_tunlab._y) is a module or package of this project."""
    parts = dotted.split(".")
    base = ROOT / "plugins" if parts[0] == "pytest_tunlab" else ROOT
    path = base.joinpath(*parts)
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def problems() -> Iterator[str]:
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        checker = Checker(path, tree)
        checker.visit(tree)
        yield from checker.problems


def test_no_module_reads_another_modules_private_names() -> None:
    found = list(problems())
    assert not found, "private reach-ins:\n" + "\n".join(found)


def check(source: str) -> list[str]:
    tree = ast.parse(source)
    checker = Checker(ROOT / "tunlab" / "sample.py", tree)
    checker.visit(tree)
    return checker.problems


def test_the_checker_finds_reach_ins() -> None:
    # another class's private attribute, even where this module has one of the same name
    assert check("class A:\n    def __init__(self, dev: Device):\n        self._rx = dev._rx\n")
    assert check("import other\nother._helper()\n")  # a module's private function
    assert check("from tunlab.other import _helper\n")
    assert not check("from tunlab.devices.offload import _impl\n")  # an internal module
    # the same class's other instance, and a class of this module, are this module's business
    assert not check(
        "class A:\n    def __init__(self):\n        self._x = 1\n    def eq(self, o: A):\n        return o._x\n"
    )
    assert not check(
        "class W:\n    def _pop(self): ...\nclass D:\n    def f(self):\n        return self.w._pop()\n"
    )


def _compared_strings(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """String constants a comparison or a match case tests against: `x == "veth"`,
    `x in ("netns", "vm")`, `case "bridge":`."""
    for n in ast.walk(tree):
        operands: list[ast.expr] = []
        if isinstance(n, ast.Compare):
            operands = [n.left, *n.comparators]
        elif isinstance(n, ast.MatchValue):
            operands = [n.value]
        for op in operands:
            items = op.elts if isinstance(op, (ast.Tuple, ast.List, ast.Set)) else [op]
            for item in items:
                if isinstance(item, ast.Constant) and isinstance(item.value, str):
                    yield item.lineno, item.value


def test_no_link_type_or_node_kind_name_is_compared_outside_its_room() -> None:
    """A link type's name is tested only in topologies/_links/, a node kind's only in
    topologies/_drivers/: adding either is one new file there."""
    from tunlab.topologies._drivers import all_drivers
    from tunlab.topologies._links import link_types

    rooms = dict.fromkeys(link_types(), "_links") | {d.kind: "_drivers" for d in all_drivers()}
    found = []
    for path in SOURCES:
        rel = path.relative_to(ROOT)
        for line, value in _compared_strings(ast.parse(path.read_text())):
            room = rooms.get(value)
            if room is not None and f"topologies/{room}/" not in rel.as_posix():
                found.append(f"{rel}:{line}: compares {value!r} (belongs in topologies/{room}/)")
    assert not found, "\n".join(found)


def test_the_name_check_sees_comparisons() -> None:
    tree = ast.parse(
        'if kind == "vm" or t in ("veth", "x"):\n    pass\nmatch k:\n    case "bridge":\n        pass\n'
    )
    assert {v for _line, v in _compared_strings(tree)} == {"vm", "veth", "x", "bridge"}
