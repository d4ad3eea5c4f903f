"""`fovcompletion models`: the bundles this installation can find, each verified (hashes included)."""

from __future__ import annotations

import argparse
import json

from ..errors import FOVCompletionError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list and verify the model bundles found",
        description="List bundles: bundled, the user folder, FOVCOMPLETION_MODEL_PATH.",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--check",
        metavar="BUNDLE",
        help="check one bundle (a folder, or a name from the listing) as a run would load it: its metadata, every "
        "weight file's sha256 and that the weights fit its networks; one line (with --json, one object with the "
        "listing's name, path and status), exit 1 if not (the listing checks metadata and hashes only)",
    )
    parser.set_defaults(handler=run)


def sampler_summary(sampler: dict) -> str:
    """The settings a run uses when not told otherwise, as a reader compares them with `complete --help`."""
    best_of = f", best of {sampler['candidates']} per window" if sampler["candidates"] > 1 else ""
    guide = f", autoguidance {sampler['autoguidance']:g}" if sampler.get("autoguidance") else ""
    if sampler.get("autoguidance") and sampler.get("guide_alone_from") is not None:
        guide += f" (the guide alone from t = {sampler['guide_alone_from']})"
    return (
        f"{sampler['steps']} steps{best_of}, guidance {sampler['guidance']:g}{guide}, eta {sampler['eta']:g}"
    )


def check(bundle: str, as_json: bool = False) -> int:
    """Load the bundle's networks with its weights, what `complete` does first, so that a bundle whose weights
    do not fit its architecture is refused before it is installed, not at its first run."""
    from ..bundle import load_bundle
    from ..registry import resolve_bundle

    folder = None
    try:
        folder = resolve_bundle(bundle)
        loaded = load_bundle(folder)  # raises BundleError (one line) for any mismatch
    except FOVCompletionError as error:
        if not as_json:
            raise
        # named as the listing names it where the folder was found, else as asked for
        name, path = (folder.name, str(folder)) if folder is not None else (bundle, None)
        print(json.dumps({"name": name, "path": path, "status": f"INVALID: {error}"}))
        return 1
    if as_json:
        print(json.dumps({"name": loaded.metadata.name, "path": str(loaded.path), "status": "ok"}))
    else:
        print(f"{loaded.metadata.name}: ok ({loaded.path}): metadata, sha256 and networks")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.check is not None:
        return check(args.check, args.json)
    from ..bundle import verify_bundle
    from ..registry import ENV_MODEL_PATH, bundle_folders_with_source, user_models_dir

    rows, failures = [], 0
    for folder, source in bundle_folders_with_source():
        try:
            metadata = verify_bundle(folder)
            rows.append(
                {
                    "name": metadata.name,
                    "source": source,
                    "path": str(folder),
                    "status": "ok",
                    "canvas": list(metadata.canvas.shape),
                    "spacing_mm": list(metadata.canvas.spacing_mm),
                    "description": metadata.description,
                    "sampler": {
                        "steps": metadata.steps,
                        "candidates": metadata.candidates,
                        "guidance": metadata.guidance,
                        "autoguidance": metadata.autoguidance,
                        # None: never (the steps keep the classifier-free guidance throughout)
                        "guide_alone_from": metadata.guide_alone_from
                        if metadata.guide_alone_from < metadata.scheduler.num_train_timesteps
                        else None,
                        "eta": metadata.eta,
                    },
                }
            )
        except FOVCompletionError as error:
            failures += 1
            rows.append(
                {"name": folder.name, "source": source, "path": str(folder), "status": f"INVALID: {error}"}
            )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        if not rows:
            print(
                f"no bundles found (searched the bundled models, {user_models_dir()} and ${ENV_MODEL_PATH})"
            )
        for row in rows:
            print(f"{row['name']:<36} {row['source']:<8} {row['status']:<6} {row['path']}")
            if "sampler" in row:
                print(f"{'':<36} default sampler: {sampler_summary(row['sampler'])}")
    return 1 if failures else 0
