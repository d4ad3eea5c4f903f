"""FOVCompletion.json (the catalog entry), extension.s4ext (for Slicer 5.6 and older) and the CMake metadata pass
the Slicer Extensions Index description checks; the catalog entry says the same as the other two.

Reimplemented offline from Slicer/ExtensionsIndex `scripts/check_description_files.py` (main branch, commit
07f1d1b2781c7dd9f6e2a9f5521b3ed43631724c): check_category, check_scm_url_syntax, check_extension_name,
check_git_repository_name, check_cmakelists_content (project name, EXTENSION_ICONURL, EXTENSION_SCREENSHOTURLS),
check_json_schema (FOVCompletion.json, the catalog entry, against schema v1.0.2's rules), check_repository_size
and check_license_file. Not reimplemented, as they need the network: cloning, downloading the images, the GitHub
topic "3d-slicer-extension". The s4ext keys and required fields follow Slicer's
Extensions/CMake/SlicerExtensionDescriptionSpec.cmake.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTENSION_NAME = "FOVCompletion"

# SlicerExtensionDescriptionSpec.cmake: every metadata name; SCM, SCMURL and SCMREVISION are required.
S4EXT_KEYS = {
    "scm", "scmurl", "scmrevision", "depends", "recommends", "build_subdirectory", "homepage", "contributors",
    "category", "iconurl", "description", "screenshoturls", "enabled", "status",
}  # fmt: skip
S4EXT_REQUIRED = {"scm", "scmurl", "scmrevision"}
# check_description_files.py: ACCEPTED_EXTENSION_CATEGORIES (the index's category list, as data).
ACCEPTED_EXTENSION_CATEGORIES = {
    "Active Learning", "Analysis", "Auto3dgm", "BigImage", "Cardiac", "Chest Imaging Platform", "Conda",
    "Converters", "DICOM", "DSCI", "Developer Tools", "Diffusion", "Examples", "Exporter", "FTV Segmentation",
    "Filtering", "Filtering.Morphology", "Filtering.Vesselness", "Holographic Display", "Image Synthesis", "IGT",
    "Informatics", "Netstim", "Neuroimaging", "Nuclear Medicine", "Orthodontics", "Osteotomy Planning",
    "Otolaryngology", "Photogrammetry", "Pipelines", "Planning", "Printing", "Quantification", "Radiotherapy",
    "Registration", "Remote", "Rendering", "SPHARM", "Segmentation", "Sequences", "Shape Analysis",
    "Shape Regression", "Shape Visualization", "Simulation", "SlicerCMF", "SlicerMorph", "Spectral Imaging",
    "Supervisely", "Surface Models", "SurfaceLearner", "Tomographic Reconstruction", "Tracking", "Tractography",
    "Training", "Ultrasound", "Utilities", "Vascular Modeling Toolkit", "Virtual Reality", "VisSimTools",
    "Web System Tools", "Wizards",
}  # fmt: skip
REPOSITORY_PREFIXES = ("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")
REPOSITORY_SIZE_LIMIT_MB = 100
LICENSE_FILE_NAMES = (
    "LICENSE",
    "LICENCE",
    "License.txt",
    "license.txt",
    "LICENSE.txt",
    "COPYING",
    "COPYING.txt",
)
CATALOG_SCHEMA = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#"
CATALOG_PROPERTIES = {
    "$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
    "build_dependencies": list, "dicom_support_rule": str, "build_subdirectory": str, "enabled": bool, "tier": int,
}  # fmt: skip


def read_s4ext(path: Path) -> dict[str, str]:
    """First token of each non-comment line is the keyword, the rest of the line (may be blank) the value."""
    entries = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.strip().partition(" ")
        assert key not in entries, f"{key} is given twice"
        entries[key] = value.strip()
    return entries


def cmake_metadata() -> tuple[str, dict[str, str]]:
    text = (ROOT / "CMakeLists.txt").read_text()
    project = re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", text, re.IGNORECASE)
    return (project[0].strip("\"'") if project else ""), dict(
        re.findall(r'set\s*\(EXTENSION_(\w+)\s+"([^"]*)"', text)
    )


@pytest.fixture(scope="module")
def s4ext() -> dict[str, str]:
    return read_s4ext(ROOT / "extension.s4ext")


def test_keys_follow_the_description_spec(s4ext):
    assert set(s4ext) <= S4EXT_KEYS, f"unknown keys: {set(s4ext) - S4EXT_KEYS}"
    assert all(s4ext.get(key) for key in S4EXT_REQUIRED)
    for key in (
        "homepage",
        "contributors",
        "category",
        "iconurl",
        "description",
        "screenshoturls",
        "depends",
    ):
        assert s4ext.get(key), f"{key} is missing or empty"
    assert (
        s4ext["scm"] == "git"
        and s4ext["enabled"] in ("0", "1")
        and s4ext.get("build_subdirectory", ".") == "."
    )
    assert "\n" not in s4ext["description"] and len(s4ext["description"]) < 400


def test_category_is_accepted(s4ext):  # check_category
    assert s4ext["category"] in ACCEPTED_EXTENSION_CATEGORIES


def test_scm_url_syntax(s4ext):  # check_scm_url_syntax
    url = s4ext["scmurl"]
    assert "://" in url and urllib.parse.urlsplit(url).scheme in ("git", "https")


def test_extension_and_repository_names(s4ext):  # check_extension_name, check_git_repository_name
    assert not EXTENSION_NAME.lower().startswith("slicer")
    repository = os.path.splitext(
        urllib.parse.urlsplit(s4ext["scmurl"].strip().strip("/")).path.split("/")[-1]
    )[0]
    assert repository.startswith(REPOSITORY_PREFIXES), repository


def test_cmakelists_content(s4ext):  # check_cmakelists_content
    text = (ROOT / "CMakeLists.txt").read_text()
    project, metadata = cmake_metadata()
    assert project == EXTENSION_NAME
    icon = re.findall(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', text, re.IGNORECASE)
    screenshots = re.findall(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', text, re.IGNORECASE)
    assert icon and screenshots
    for url in [icon[0].strip()] + screenshots[0].split():
        assert url.startswith("https://") and url.lower().endswith(IMAGE_SUFFIXES), url
    # the description file says the same as the CMake metadata
    for key in ("homepage", "category", "contributors", "description", "iconurl", "screenshoturls"):
        assert s4ext[key] == metadata[key.upper()], key
    assert s4ext["depends"].split() == metadata["DEPENDS"].split() == ["PyTorch"]


def test_urls_point_at_this_repository(s4ext):
    """https homepage and icon; the raw icon URL names a file that exists in this repository, at 128 x 128."""
    repository = urllib.parse.urlsplit(s4ext["scmurl"]).path.removesuffix(".git").strip("/")
    assert s4ext["homepage"] == f"https://github.com/{repository}"
    prefix = f"https://raw.githubusercontent.com/{repository}/{s4ext['scmrevision']}/"
    assert s4ext["iconurl"].startswith(prefix)
    icon = ROOT / s4ext["iconurl"][len(prefix) :]
    assert icon.is_file(), icon
    from PIL import Image

    assert Image.open(icon).size == (128, 128)
    assert all(url.startswith(prefix) for url in s4ext["screenshoturls"].split())


def validate_catalog_entry(entry: dict) -> None:
    """Schema v1.0.2's rules (Slicer/Slicer Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json, the same
    file as ExtensionsIndex schemas/, which its pre-commit check-jsonschema hook applies to every entry)."""
    assert {"$schema", "category", "scm_url"} <= set(entry), "a required property is missing"
    assert set(entry) <= set(CATALOG_PROPERTIES), f"not in the schema: {set(entry) - set(CATALOG_PROPERTIES)}"
    for key, value in entry.items():
        assert isinstance(value, CATALOG_PROPERTIES[key]), key
    assert all(isinstance(d, str) for d in entry.get("build_dependencies", []))
    assert entry.get("scm_type", "git") in ("git", "local")
    assert not isinstance(entry.get("tier", 1), bool) and 1 <= entry.get("tier", 1) <= 5


def test_catalog_entry(s4ext):  # check_json_schema
    """FOVCompletion.json, the file to submit to the ExtensionsIndex (named after the extension), is valid and
    says what the s4ext and the CMake metadata say."""
    path = ROOT / f"{EXTENSION_NAME}.json"
    text = path.read_text(encoding="utf-8")
    entry = json.loads(text)
    validate_catalog_entry(entry)
    assert entry["$schema"] == CATALOG_SCHEMA
    # the index's pre-commit style (prettier, arrays always wrapped): 2-space indentation, final newline, no tabs
    assert text == json.dumps(entry, indent=2) + "\n" and "\t" not in text and "\r" not in text
    assert entry["category"] == s4ext["category"] in ACCEPTED_EXTENSION_CATEGORIES
    assert entry["scm_url"] == s4ext["scmurl"] and entry["scm_revision"] == s4ext["scmrevision"]
    assert entry["build_dependencies"] == s4ext["depends"].split() == ["PyTorch"]
    assert entry.get("build_subdirectory", ".") == s4ext.get("build_subdirectory", ".")
    assert entry.get("tier") == 1  # experimental: a new extension starts at tier 1
    _, metadata = cmake_metadata()
    assert entry["category"] == metadata["CATEGORY"]


def test_catalog_schema_rules_reject_bad_entries():
    good = {"$schema": CATALOG_SCHEMA, "category": "Image Synthesis", "scm_url": "https://x/SlicerY.git"}
    validate_catalog_entry(good)
    for bad in (
        {k: v for k, v in good.items() if k != "scm_url"},
        dict(good, scmurl="https://x"),  # the pre-2024 key names are not in the schema
        dict(good, tier=6),
        dict(good, tier=True),
        dict(good, build_dependencies="PyTorch"),
        dict(good, scm_type="svn"),
    ):
        with pytest.raises(AssertionError):
            validate_catalog_entry(bad)


def tracked_files() -> list[Path]:
    try:
        listing = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in listing.decode().split("\0") if name]


def test_repository_size():  # check_repository_size
    size = sum(path.stat().st_size for path in tracked_files() if path.is_file())
    assert size / 2**20 < REPOSITORY_SIZE_LIMIT_MB


def test_license_file():  # check_license_file
    assert any((ROOT / name).is_file() for name in LICENSE_FILE_NAMES), (
        "the Extensions Index requires a license file in the repository root (LICENSE, LICENSE.txt, COPYING...)"
    )
