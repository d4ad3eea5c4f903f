"""The extension's CMake files: every Python file and resource of the module folder is built into the package.

Slicer's convention is an explicit file list; a file missing from it is silently left out of the installed
extension, so this test compares the lists (and the one glob, for the model bundles) with the files on disk.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "FOVCompletion"
NOT_PACKAGED_DIRS = {"__pycache__", "Testing"}  # Testing/ holds CMake test registration only


def strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def commands(text: str, name: str) -> list[list[str]]:
    """Arguments of every `name(...)` call (CMake commands do not nest parentheses in these files)."""
    found = re.findall(rf"\b{name}\s*\(([^)]*)\)", strip_comments(text), flags=re.IGNORECASE)
    return [args.split() for args in found]


def module_cmake() -> dict:
    """The module CMakeLists.txt resolved: what the macro gets as SCRIPTS and RESOURCES, and the glob patterns."""
    text = (MODULE / "CMakeLists.txt").read_text()
    variables: dict[str, list[str]] = {args[0]: args[1:] for args in commands(text, "set")}
    globs: dict[str, list[str]] = {}
    for args in commands(text, "file"):
        if args[0].upper() == "GLOB_RECURSE":
            assert args[2:4] == ["RELATIVE", "${CMAKE_CURRENT_SOURCE_DIR}"], (
                "globs must give module-relative paths"
            )
            patterns = [a for a in args[4:] if a != "CONFIGURE_DEPENDS"]
            globs[args[1]] = [p.replace("${CMAKE_CURRENT_SOURCE_DIR}/", "") for p in patterns]
    for args in commands(text, "list"):
        if args[0] == "APPEND":
            variables[args[1]] = variables.get(args[1], []) + args[2:]
    module_name = variables["MODULE_NAME"][0]

    def expand(items: list[str]) -> list[str]:
        """Variable references replaced by their values; a glob's variable becomes "GLOB:<pattern>" items."""
        out = []
        for item in items:
            reference = re.fullmatch(r"\$\{(\w+)\}", item)
            if reference and reference.group(1) in globs:
                out += [f"GLOB:{pattern}" for pattern in globs[reference.group(1)]]
            elif reference and reference.group(1) != "MODULE_NAME":
                out += expand(variables[reference.group(1)])
            else:
                out.append(item.replace("${MODULE_NAME}", module_name))
        return out

    [macro] = commands(text, "slicerMacroBuildScriptedModule")
    sections: dict[str, list[str]] = {}
    key = None
    for arg in macro:
        if arg in ("NAME", "SCRIPTS", "RESOURCES"):
            key = arg
            sections[key] = []
        elif arg in ("WITH_GENERIC_TESTS", "WITH_SUBDIR", "VERBOSE"):
            sections[arg] = []
        else:
            sections[key].append(arg)
    resources = expand(sections["RESOURCES"])
    return {
        "text": text,
        "name": expand(sections["NAME"])[0],
        "scripts": expand(sections["SCRIPTS"]),
        "resources": [r for r in resources if not r.startswith("GLOB:")],
        "resource_globs": [r[len("GLOB:") :] for r in resources if r.startswith("GLOB:")],
        "options": set(sections),
    }


def glob_covers(pattern: str, relative: str) -> bool:
    """CMake GLOB_RECURSE semantics for the patterns used here: `*` also crosses directories."""
    return fnmatch.fnmatchcase(relative, pattern)


def module_files() -> list[str]:
    files = []
    for path in MODULE.rglob("*"):
        relative = path.relative_to(MODULE)
        if not path.is_file() or NOT_PACKAGED_DIRS & set(relative.parts) or relative.name == "CMakeLists.txt":
            continue
        if any(part.endswith(".egg-info") for part in relative.parts) or path.suffix == ".pyc":
            continue
        files.append(relative.as_posix())
    return sorted(files)


@pytest.fixture(scope="module")
def cmake():
    return module_cmake()


def test_every_python_file_is_listed(cmake):
    on_disk = {f for f in module_files() if f.endswith(".py")}
    missing = sorted(on_disk - set(cmake["scripts"]))
    assert not missing, f"add to FOVCompletion/CMakeLists.txt (MODULE_ or ENGINE_PYTHON_SCRIPTS): {missing}"
    assert "FOVCompletion.py" in cmake["scripts"] and "fovcompletion/__main__.py" in cmake["scripts"]


def test_every_resource_is_listed_or_globbed(cmake):
    others = [f for f in module_files() if not f.endswith(".py")]
    missing = [
        f
        for f in others
        if f not in cmake["resources"] and not any(glob_covers(p, f) for p in cmake["resource_globs"])
    ]
    assert not missing, f"add to MODULE_PYTHON_RESOURCES in FOVCompletion/CMakeLists.txt: {missing}"
    assert "Resources/UI/FOVCompletion.ui" in cmake["resources"]
    assert "Resources/Icons/FOVCompletion.png" in cmake["resources"]
    assert "Resources/requirements.txt" in cmake["resources"]  # read by FOVCompletionLib/dependencies.py


def test_the_whole_engine_package_is_installed(cmake):
    """A deliberate choice (see the CMake comment): `PythonSlicer -m fovcompletion` offers every CLI command, so
    the sub-packages the module never runs are installed too (test_every_python_file_is_listed checks all files)."""
    for folder in ("training", "benchmark"):
        assert f"fovcompletion/{folder}/__init__.py" in cmake["scripts"]


def test_model_bundles_added_later_are_packaged(cmake):
    for future in (
        "Resources/Models/fovcompletion-spine-t2w-window/bundle.json",
        "Resources/Models/b/unet.safetensors",
    ):
        assert any(glob_covers(p, future) for p in cmake["resource_globs"]), future
    assert "CONFIGURE_DEPENDS" in cmake["text"]  # a new model file re-runs the glob
    assert not any(glob_covers(p, "fovcompletion/x.py") for p in cmake["resource_globs"])  # only models


def test_every_listed_file_exists(cmake):
    listed = cmake["scripts"] + cmake["resources"]
    assert len(listed) == len(set(listed)), "a file is listed twice"
    missing = [f for f in listed if not (MODULE / f).is_file()]
    assert not missing, f"listed in FOVCompletion/CMakeLists.txt but not on disk: {missing}"


def test_module_macro_and_self_test(cmake):
    assert cmake["name"] == "FOVCompletion"
    assert "WITH_GENERIC_TESTS" in cmake["options"]
    assert commands(cmake["text"], "slicer_add_python_unittest") == [["SCRIPT", "${MODULE_NAME}.py"]]
    for [subdirectory] in commands(cmake["text"], "add_subdirectory"):
        assert (MODULE / subdirectory / "CMakeLists.txt").is_file()


def test_top_level_extension_cmake():
    text = (ROOT / "CMakeLists.txt").read_text()
    assert commands(text, "project") == [["FOVCompletion"]]
    assert ["Slicer", "REQUIRED"] in commands(text, "find_package")
    includes = [args[0] for args in commands(text, "include")]
    assert includes == [
        "${Slicer_USE_FILE}",
        "${Slicer_EXTENSION_GENERATE_CONFIG}",
        "${Slicer_EXTENSION_CPACK}",
    ]
    assert commands(text, "add_subdirectory") == [["FOVCompletion"]]
    metadata = dict(re.findall(r'set\(EXTENSION_(\w+)\s+"([^"]*)"', text))
    for key in (
        "HOMEPAGE",
        "CATEGORY",
        "CONTRIBUTORS",
        "DESCRIPTION",
        "ICONURL",
        "SCREENSHOTURLS",
        "DEPENDS",
    ):
        assert metadata.get(key), f"EXTENSION_{key} is missing or empty"
    assert metadata["DEPENDS"].split() == ["PyTorch"]


# cmake_minimum_required of Slicer's extension template (Utilities/Templates/Extensions/Default/CMakeLists.txt) at
# the tag of each supported Slicer; the extension must configure with the oldest one's CMake.
SLICER_TEMPLATE_CMAKE_MINIMUM = {
    "5.8": ["VERSION", "3.16.3...3.19.7", "FATAL_ERROR"],
    "5.10": ["VERSION", "3.20.6...3.22.6", "FATAL_ERROR"],
    "5.12": ["VERSION", "3.28.0...3.28.0", "FATAL_ERROR"],
}
OLDEST_SUPPORTED_SLICER = "5.8"


def test_cmake_minimum_is_the_oldest_supported_slicers():
    text = (ROOT / "CMakeLists.txt").read_text()
    assert commands(text, "cmake_minimum_required") == [
        SLICER_TEMPLATE_CMAKE_MINIMUM[OLDEST_SUPPORTED_SLICER]
    ]
    assert strip_comments(text).lstrip().lower().startswith("cmake_minimum_required")  # the first command
    minimum = SLICER_TEMPLATE_CMAKE_MINIMUM[OLDEST_SUPPORTED_SLICER][1].split("...")[0]
    for arguments in SLICER_TEMPLATE_CMAKE_MINIMUM.values():  # every supported Slicer's CMake satisfies it
        required = arguments[1].split("...")[0]
        assert tuple(map(int, required.split("."))) >= tuple(map(int, minimum.split(".")))
