"""The offline sample: the engine's cervical phantom as a volume node and as a file Slicer can load."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import slicer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FOVCompletion"))
from FOVCompletionLib.known_region import sameImageInWorld
from FOVCompletionLib.sample_data import (
    PHANTOM_FILE_NAME,
    PHANTOM_SAMPLE_NAME,
    SAMPLE_CATEGORY,
    phantomVolumeNode,
    registerPhantomSample,
    writePhantomFile,
)
from FOVCompletionLib.volume_files import readVolumeFromFile
from FOVCompletionLib.volume_geometry import arrayAndAffineFromVolume, extentAlongMm, sagittalSliceCount

phantom = pytest.importorskip("fovcompletion.phantom")
SPACING = 2.0  # coarser than the sample's 1 mm, to keep the test fast


def test_phantom_node_has_the_phantom_geometry():
    scene = slicer.vtkMRMLScene()
    node = phantomVolumeNode(scene, region="cervical", seed=3, spacingMm=SPACING)
    expected = phantom.crop_phantom(phantom.generate_phantom(seed=3, spacing_mm=SPACING), "cervical")
    array, affine = arrayAndAffineFromVolume(node)
    np.testing.assert_allclose(affine, expected.affine)
    np.testing.assert_array_equal(array, np.round(expected.image).astype(np.int16))
    assert node.GetDisplayNode() is not None
    assert sagittalSliceCount(node) == expected.image.shape[0]
    assert 100 < extentAlongMm(node, "S") < 300  # a cervical field of view, not the whole spine


def test_phantom_file_loads_with_the_same_world_geometry(tmp_path):
    path = writePhantomFile(tmp_path / "cache" / PHANTOM_FILE_NAME, seed=3, spacingMm=SPACING)
    assert sorted(p.name for p in path.parent.iterdir()) == [PHANTOM_FILE_NAME]  # no partial file left
    node = readVolumeFromFile(slicer.vtkMRMLScene(), path, "phantom")
    direct = phantomVolumeNode(slicer.vtkMRMLScene(), seed=3, spacingMm=SPACING)
    loaded_array, loaded_affine = arrayAndAffineFromVolume(node)
    direct_array, direct_affine = arrayAndAffineFromVolume(direct)
    assert sameImageInWorld(direct_array, direct_affine, loaded_array, loaded_affine)


def test_the_sample_is_generated_without_the_engines_packages(tmp_path):
    """Loading the sample installs nothing: the phantom is numpy and scipy (which Slicer ships) and Slicer's own
    writer, so a Slicer without torch, MONAI or nibabel generates it (they are blocked in the child process)."""
    script = textwrap.dedent(
        f"""
        import importlib.abc
        import sys

        class Absent(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("torch", "monai", "nibabel", "safetensors"):
                    raise ImportError(f"{{name}} is not installed")

        sys.meta_path.insert(0, Absent())
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1] / "FOVCompletion")!r})
        from FOVCompletionLib.sample_data import writePhantomFile
        print(writePhantomFile({str(tmp_path / PHANTOM_FILE_NAME)!r}, seed=3, spacingMm={SPACING}))
        """
    )
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    node = readVolumeFromFile(slicer.vtkMRMLScene(), tmp_path / PHANTOM_FILE_NAME, "phantom")
    assert sagittalSliceCount(node) > 0


class SampleDataLogic58:
    """Slicer 5.8/5.10's SampleDataLogic registration API (no categories of their own): records the calls.
    The Sample Data panel titles a category's group box with the category key itself there."""

    sources: dict = {}

    @classmethod
    def registerCustomSampleDataSource(cls, category="Custom", **source):
        cls.sources.setdefault(category, []).append(SimpleNamespace(**source))

    @classmethod
    def sampleDataSourcesByCategory(cls, category):
        return cls.sources.get(category, [])  # as Slicer's: the live list where the category has one

    @classmethod
    def shownTitle(cls, category):
        return category


class SampleDataLogic512(SampleDataLogic58):
    """Slicer 5.12 adds registerCustomSampleDataCategory; the panel shows the registered title."""

    titles: dict = {}

    @classmethod
    def registerCustomSampleDataCategory(cls, category, title):
        cls.titles[category] = title

    @classmethod
    def shownTitle(cls, category):
        return cls.titles.get(category, category)


@pytest.mark.parametrize("logic", [SampleDataLogic58, SampleDataLogic512])
def test_the_sample_category_reads_well_in_every_slicer(logic, tmp_path):
    """Issue 15, item 6: on 5.8 and 5.10 the category shows its key, so the key is the readable name."""
    logic.sources = {}
    path = tmp_path / PHANTOM_FILE_NAME

    def downloader(source=None):
        return None

    category = registerPhantomSample(
        logic, path, path.as_uri(), tmp_path / "icon.png", downloader, "FOV-Vervollständigung"
    )
    [source] = logic.sources[category]
    assert source.sampleName == PHANTOM_SAMPLE_NAME and source.fileNames == PHANTOM_FILE_NAME
    assert source.uris == path.as_uri() and source.customDownloader is downloader
    expected = "FOV-Vervollständigung" if logic is SampleDataLogic512 else "FOV Completion"
    assert logic.shownTitle(category) == expected
    assert SAMPLE_CATEGORY == "FOV Completion"


def test_registering_again_after_a_reload_replaces_the_sample_instead_of_adding_a_second(tmp_path):
    """A "Reload and Test" registers the phantom again with a new downloader function; Slicer's duplicate check
    compares the downloader too, so the panel would list the phantom twice. Other samples stay."""
    logic = SampleDataLogic512
    logic.sources = {SAMPLE_CATEGORY: [SimpleNamespace(sampleName="Another sample")]}
    path = tmp_path / PHANTOM_FILE_NAME
    downloaders = [lambda source=None: None, lambda source=None: None]  # the module before and after a reload
    for downloader in downloaders:
        registerPhantomSample(logic, path, path.as_uri(), tmp_path / "icon.png", downloader)
    names = [source.sampleName for source in logic.sources[SAMPLE_CATEGORY]]
    assert names == ["Another sample", PHANTOM_SAMPLE_NAME]
    assert logic.sources[SAMPLE_CATEGORY][-1].customDownloader is downloaders[1]
