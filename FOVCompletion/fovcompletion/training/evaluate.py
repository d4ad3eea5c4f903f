"""Quality of a bundle on held-out scans and phantoms: hide part of a scan, complete it, compare.

Used for the model card until the benchmark command exists. Each scan is cut (inferior part hidden, or
superior part hidden), completed by `pipeline.complete` exactly as a user would run it, and the generated rows
are compared with the hidden truth (SSIM and PSNR on intensities normalised to [-1, 1] by the truth's own
0..95th percentiles, the model's normalisation). A copy-the-edge-row baseline gives the numbers a scale.

    python -m fovcompletion.training.evaluate --model BUNDLE --data BIDS_ROOT --subjects sub-a,sub-b -o q.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..bundle import IntensitySpec
from ..geometry import MODEL_AXCODES, reorient
from ..image_io import Volume, read_volume
from ..intensity import IntensityScaling


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 2.0) -> float:
    """Mean structural similarity of two 2D images (Gaussian window, sigma 1.5, as Wang et al. 2004)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    blur = lambda x: ndimage.gaussian_filter(x.astype(np.float64), 1.5, truncate=3.5)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(index.mean())


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 2.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float(10 * np.log10(data_range**2 / max(mse, 1e-12)))


def crop_rows(volume: Volume, start: int, stop: int) -> Volume:
    """Rows [start, stop) of a model-oriented (LIA) volume, with the matching affine."""
    shift = np.eye(4)
    shift[1, 3] = start
    return Volume(volume.array[:, start:stop].copy(), volume.affine @ shift)


def scores(truth: np.ndarray, guess: np.ndarray) -> dict[str, float]:
    """Mean SSIM/PSNR over slices of (slices, rows, cols) arrays in normalised units."""
    return {
        "ssim": float(np.mean([ssim(t, g) for t, g in zip(truth, guess, strict=True)])),
        "psnr": psnr(truth, guess),
    }


def evaluate_volume(
    volume: Volume, model, hidden_mm: float, direction: str, steps: int, slices: int, seed: int = 0
) -> dict:
    """Hide `hidden_mm` at one end (`direction` 'inferior' or 'superior'), complete, score the hidden rows."""
    from ..pipeline import complete

    lia = Volume(*reorient(volume.array, volume.affine, MODEL_AXCODES))
    spacing = float(np.linalg.norm(lia.affine[:3, 1]))
    hidden = int(round(hidden_mm / spacing))
    n_rows = lia.array.shape[1]
    if direction == "inferior":
        known, hidden_rows = crop_rows(lia, 0, n_rows - hidden), slice(n_rows - hidden, n_rows)
        extend = {"extend_inferior_mm": hidden * spacing}
    else:
        known, hidden_rows = crop_rows(lia, hidden, n_rows), slice(0, hidden)
        extend = {"extend_superior_mm": hidden * spacing}
    started = time.perf_counter()
    result = complete(known, model=model, steps=steps, slices=slices, seed=seed, **extend)
    seconds = time.perf_counter() - started
    chosen = result.slice_indices
    truth_all = lia.array[chosen]
    scaling = IntensityScaling.fit(truth_all, IntensitySpec())
    truth = scaling.normalise(truth_all[:, hidden_rows])
    out_rows = slice(result.image.shape[1] - hidden, None) if direction == "inferior" else slice(0, hidden)
    generated = scaling.normalise(result.image[:, out_rows])
    edge_row = (
        truth_all[:, n_rows - hidden - 1 : n_rows - hidden]
        if direction == "inferior"
        else truth_all[:, hidden : hidden + 1]
    )
    baseline = scaling.normalise(np.repeat(edge_row, hidden, axis=1))
    return {
        "direction": direction,
        "hidden_mm": round(hidden * spacing, 1),
        "seconds": round(seconds, 2),
        "model": scores(truth, generated),
        "edge_copy_baseline": scores(truth, baseline),
        "images": (truth, generated),
    }


def summarise(rows: list[dict]) -> dict:
    def mean(key: str, metric: str) -> float:
        return round(float(np.mean([r[key][metric] for r in rows])), 4)

    return {
        "cases": len(rows),
        "ssim": mean("model", "ssim"),
        "psnr": mean("model", "psnr"),
        "baseline_ssim": mean("edge_copy_baseline", "ssim"),
        "baseline_psnr": mean("edge_copy_baseline", "psnr"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, default=None, help="BIDS root of the held-out subjects")
    parser.add_argument("--subjects", default="", help="comma-separated subject ids")
    parser.add_argument("--phantoms", default="", help="comma-separated phantom seeds (not used in training)")
    parser.add_argument("--hidden-mm", type=float, default=80.0)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--slices", type=int, default=5)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--png-dir", type=Path, default=None, help="write truth | completion strips here")
    args = parser.parse_args(argv)
    cases: list[tuple[str, Volume]] = []
    for subject in filter(None, args.subjects.split(",")):
        path = next(iter(sorted((args.data / subject).glob("**/*_T2w.nii*"))), None)
        if path is None:
            raise SystemExit(f"no T2w scan for {subject} under {args.data}")
        cases.append((subject, read_volume(path)))
    for seed in filter(None, args.phantoms.split(",")):
        from ..phantom import crop_phantom, generate_phantom

        phantom = crop_phantom(generate_phantom(seed=int(seed), spacing_mm=1.0), (0.0, 330.0))
        cases.append((f"phantom-seed{seed}", Volume(phantom.image, phantom.affine)))
    results = {"scans": {}, "phantoms": {}}
    for name, volume in cases:
        group = "phantoms" if name.startswith("phantom") else "scans"
        for direction in ("inferior", "superior"):
            row = evaluate_volume(volume, args.model, args.hidden_mm, direction, args.steps, args.slices)
            truth, generated = row.pop("images")
            if args.png_dir is not None:
                from .logs import save_grid

                mid = len(truth) // 2
                save_grid(args.png_dir / f"{name}-{direction}.png", [[truth[mid], generated[mid]]])
            results[group][f"{name}/{direction}"] = row
            print(f"{name} {direction}: {json.dumps(row)}", file=sys.stderr, flush=True)
    summary = {group: summarise(list(rows.values())) for group, rows in results.items() if rows}
    payload = {
        "method": "hide the inferior or superior end of each scan, complete it, compare the hidden rows",
        "hidden_mm": args.hidden_mm,
        "steps": args.steps,
        "slices": args.slices,
        "summary": summary,
        **results,
    }
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
