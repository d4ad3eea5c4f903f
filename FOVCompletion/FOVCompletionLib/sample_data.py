"""The offline sample: a partial-FOV (cervical) phantom generated on this machine by the engine.

No download is needed, so the sample, the self-test and a first try of the module work without network.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .volume_files import writeVolumeToFile
from .volume_geometry import setVolumeFromArrayAndAffine

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
