"""The offline sample: a partial-FOV (cervical) phantom generated on this machine by the engine.

No download is needed, so the sample, the self-test and a first try of the module work without network.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .volume_files import writeVolumeToFile
from .volume_geometry import setVolumeFromArrayAndAffine

# Slicer 5.8 and 5.10 show a Sample Data category by its key, Slicer 5.12 by the title registered for it
# (`registerCustomSampleDataCategory`, new in 5.12): a key that reads well is right on all three.
SAMPLE_CATEGORY = "FOV Completion"
PHANTOM_SAMPLE_NAME = "FOVCompletionPhantomCervical"
PHANTOM_FILE_NAME = PHANTOM_SAMPLE_NAME + ".nrrd"
PHANTOM_REGION = "cervical"
PHANTOM_SEED = 7


def phantomVolumeNode(
    scene,
    name: str = PHANTOM_SAMPLE_NAME,
    region: str = PHANTOM_REGION,
    seed: int = PHANTOM_SEED,
    spacingMm: float = 1.0,
):
    """A new scalar volume node holding the engine's phantom cropped to one region (in the phantom's geometry)."""
    from fovcompletion.phantom import crop_phantom, generate_phantom

    phantom = crop_phantom(generate_phantom(seed=seed, spacing_mm=spacingMm), region)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    image = np.asarray(phantom.image)
    # Scanner-like integers: the file is small and the sample behaves like a real scan.
    setVolumeFromArrayAndAffine(node, np.round(image).astype(np.int16), phantom.affine)
    node.CreateDefaultDisplayNodes()
    return node


def writePhantomFile(
    path: str | os.PathLike, region: str = PHANTOM_REGION, seed: int = PHANTOM_SEED, spacingMm: float = 1.0
) -> Path:
    """Generate the phantom into a file (built in a scratch scene, so the user's scene is untouched)."""
    import slicer

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = slicer.vtkMRMLScene()
    node = phantomVolumeNode(scratch, region=region, seed=seed, spacingMm=spacingMm)
    partial = path.with_name(path.name + ".partial" + "".join(path.suffixes))
    writeVolumeToFile(node, partial, compress=True)
    os.replace(partial, path)
    return path


def registerPhantomSample(
    sampleDataLogic,
    path: str | os.PathLike,
    uri: str,
    thumbnail: str | os.PathLike,
    downloader: Callable,
    categoryTitle: str = SAMPLE_CATEGORY,
) -> str:
    """Register the phantom with Sample Data (`SampleData.SampleDataLogic`); returns the category it is shown in.

    `uri` points at `path` (the file the downloader generates; "downloading" it from there is then a no-op);
    `categoryTitle` is the translated title where this Slicer can show one.
    """
    if hasattr(sampleDataLogic, "registerCustomSampleDataCategory"):  # Slicer >= 5.12
        sampleDataLogic.registerCustomSampleDataCategory(SAMPLE_CATEGORY, title=categoryTitle)
    # An earlier registration (before "Reload and Test") is replaced, not shown twice: Slicer's own duplicate check
    # compares the downloader too, and a reloaded module's is a new function. Slicer returns the live list.
    registered = sampleDataLogic.sampleDataSourcesByCategory(SAMPLE_CATEGORY)
    registered[:] = [source for source in registered if source.sampleName != PHANTOM_SAMPLE_NAME]
    sampleDataLogic.registerCustomSampleDataSource(
        category=SAMPLE_CATEGORY,
        sampleName=PHANTOM_SAMPLE_NAME,
        thumbnailFileName=str(thumbnail),
        uris=uri,
        fileNames=Path(path).name,
        nodeNames=PHANTOM_SAMPLE_NAME,
        customDownloader=downloader,
    )
    return SAMPLE_CATEGORY
