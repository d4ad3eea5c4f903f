"""Slicer-side helpers of the FOVCompletion module that need MRML but not Qt.

Everything here runs in plain Python with the `slicer-core` wheel (real MRML scenes and nodes), so CI tests it;
`FOVCompletion.py` stays a thin layer of widgets over these functions. Nothing here imports the engine
(`fovcompletion`, torch) at import time: the module panel must open before the dependencies are installed.
"""
