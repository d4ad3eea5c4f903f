"""The module, its libraries and the engine run on Python 3.9 to 3.13 (Slicer 5.8 ships Python 3.9).

Static checks, so that a 3.10-only construct is caught even in code no test imports: vermin for the syntax and
standard-library use, and an AST check for what vermin cannot tell apart (`X | Y` of types evaluated at run time,
annotations not deferred by `from __future__ import annotations`). The Slicer-side modules that need neither
MRML nor Qt are imported in a process where `slicer`, `vtk` and `qt` cannot be imported. `.ci/run` runs this file
and the engine's tests under a real Python 3.9 as well.
"""

from __future__ import annotations

import ast
import builtins
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "FOVCompletion"
MINIMUM_PYTHON = (3, 9)
CHECKED_FOLDERS = (MODULE, ROOT / "Testing")
# FOVCompletionLib modules that must import without Slicer's MRML (slicer, vtk) or Qt: the panel uses them before
# anything else, and the Python 3.9 CI step (no slicer-core wheel for 3.9) imports them.
MRML_FREE_MODULES = (
    "FOVCompletionLib.background_process",
    "FOVCompletionLib.choices",
    "FOVCompletionLib.dependencies",
    "FOVCompletionLib.engine_command",
    "FOVCompletionLib.models",
    "FOVCompletionLib.panel",
    "FOVCompletionLib.presets",
    "FOVCompletionLib.progress_events",
)
# vermin has no `python -m vermin`: its console script's entry point, run by this interpreter.
VERMIN = [sys.executable, "-c", "import sys; from vermin import main; sys.exit(main())"]
TYPE_NAMES = {name for name, value in vars(builtins).items() if isinstance(value, type)}


def python_files() -> list[Path]:
    return sorted(
        path
        for folder in CHECKED_FOLDERS
        for path in folder.rglob("*.py")
        if "__pycache__" not in path.parts and not any(p.endswith(".egg-info") for p in path.parts)
    )


def test_vermin_finds_nothing_newer_than_python_39():
    pytest.importorskip("vermin", reason="vermin is in the test extra: pip install -e '.[test]'")
    target = "{}.{}".format(*MINIMUM_PYTHON)
    # A guarded use of a newer API (with its fallback) carries a `# novermin` comment, which vermin honours.
    command = [*VERMIN, f"-t={target}-", "--violations", "--no-tips"]
    result = subprocess.run(
        command + [str(folder) for folder in CHECKED_FOLDERS], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_vermin_would_catch_a_310_construct(tmp_path):
    """The check above can fail: a zip(strict=...) in a new file is reported."""
    pytest.importorskip("vermin", reason="vermin is in the test extra: pip install -e '.[test]'")
    (tmp_path / "newer.py").write_text("pairs = list(zip([1], [2], strict=True))\n")
    result = subprocess.run(
        [*VERMIN, "-t=3.9-", "--violations", "--no-tips", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0 and "zip(strict)" in result.stdout


def has_code(tree: ast.Module) -> bool:
    body = (
        tree.body[1:]
        if tree.body and isinstance(getattr(tree.body[0], "value", None), ast.Constant)
        else tree.body
    )
    return bool(body)


def defers_annotations(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(alias.name == "annotations" for alias in node.names)
        for node in tree.body
    )


def annotation_nodes(tree: ast.AST) -> set[int]:
    """ids of every node inside an annotation (never evaluated once annotations are deferred)."""
    roots = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            roots.append(node.returns)
            arguments = node.args
            every = arguments.posonlyargs + arguments.args + arguments.kwonlyargs
            every += [a for a in (arguments.vararg, arguments.kwarg) if a is not None]
            roots += [a.annotation for a in every]
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
    return {id(inner) for root in roots if root is not None for inner in ast.walk(root)}


def looks_like_a_type(node: ast.AST) -> bool:
    """A builtin type, None, a CamelCase class name (or attribute), a subscripted type, or a union of those."""
    if isinstance(node, ast.Constant):
        return node.value is None
    if isinstance(node, ast.Subscript):
        return looks_like_a_type(node.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return looks_like_a_type(node.left) and looks_like_a_type(node.right)
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    camel_case = name[:1].isupper() and any(c.islower() for c in name)
    return name in TYPE_NAMES or camel_case


def runtime_unions(tree: ast.AST) -> list[int]:
    """Line numbers of `X | Y` of types outside annotations (a TypeError on Python 3.9)."""
    in_annotation = annotation_nodes(tree)
    return sorted(
        {
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.BitOr)
            and id(node) not in in_annotation
            and looks_like_a_type(node.left)
            and looks_like_a_type(node.right)
        }
    )


def test_every_module_defers_its_annotations():
    missing = []
    for path in python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if has_code(tree) and not defers_annotations(tree):
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"add `from __future__ import annotations` (annotations like `int | None`): {missing}"


def test_no_union_of_types_is_evaluated_at_run_time():
    found = []
    for path in python_files():
        lines = runtime_unions(ast.parse(path.read_text(encoding="utf-8")))
        found += [f"{path.relative_to(ROOT)}:{line}" for line in lines]
    assert not found, f"`X | Y` of types outside an annotation needs Python 3.10; use typing.Union: {found}"


def test_the_union_check_tells_types_from_bitwise_or():
    source = (
        "from __future__ import annotations\n"
        "Event = Start | Progress\n"  # 2: a runtime alias
        "isinstance(x, int | None)\n"  # 3
        "mask = known | hidden\n"  # arrays: fine
        "FLAGS = O_RDONLY | O_CREAT\n"  # constants: fine
        "def f(a: int | None = None) -> str | None: ...\n"  # annotations: fine
        "b: list[int] | None = None\n"
    )
    assert runtime_unions(ast.parse(source)) == [2, 3]


def test_mrml_free_modules_import_without_slicer_vtk_or_qt():
    blocked = ("slicer", "vtk", "qt", "ctk", "vtkmodules")
    script = "\n".join(
        [
            "import importlib, sys",
            f"sys.path.insert(0, {str(MODULE)!r})",
            *[f"sys.modules[{name!r}] = None" for name in blocked],  # `import slicer` raises ImportError
            f"for name in {list(MRML_FREE_MODULES)!r}:",
            "    importlib.import_module(name)",
        ]
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_package_metadata_declares_the_oldest_python():
    try:
        import tomllib  # novermin (3.11+, with the fallback below)
    except ImportError:  # Python < 3.11: pytest depends on tomli there
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["requires-python"] == ">={}.{}".format(*MINIMUM_PYTHON)
    assert project["tool"]["ruff"]["target-version"] == "py{}{}".format(*MINIMUM_PYTHON)
    assert any(r.startswith("vermin") for r in project["project"]["optional-dependencies"]["test"])
