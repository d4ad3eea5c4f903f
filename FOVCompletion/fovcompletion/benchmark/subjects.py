"""Which subjects of a BIDS root the benchmark evaluates, and why: any data set, never the model's training scans.

A model is judged on scans it never saw. The bundle's training list (`training.scans`) is never evaluated;
its held-out list (`training.held_out`) is used when those subjects are in the root (the data set the model
was trained on); otherwise every subject that is not in the training list is (a researcher's own scans).
`--subjects` restricts the choice to named subjects. The retrieval baseline searches the root's subjects that
are not evaluated (leave-one-out over all of them when every subject is evaluated).

`--training-subjects` turns the rule round for one purpose: a check of fit. The model's training subjects are
evaluated instead, and the results say so; the gap between their figures and the held-out ones is what the model
learned of its own scans and not of spines (the `denoise` ceiling's gap above all). It is never a measurement of
completion quality.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..errors import InputError
from .cases import subject_id


@dataclass(frozen=True)
class SubjectChoice:
    """The evaluated subjects, the retrieval library, and the reason, as results.json records them."""

    evaluated: list[str]
    library: list[str]
    reason: str
    excluded_training: list[str] = field(default_factory=list)
    requested: list[str] | None = None
    training_fit: bool = False  # the training subjects, evaluated for a check of fit

    def to_dict(self) -> dict:
        return {
            "evaluated": self.evaluated,
            "reason": self.reason,
            "excluded_as_training": self.excluded_training,
            "requested": self.requested,
            "retrieval_library": self.library,
            "training_fit": self.training_fit,
        }


def bundle_lists(training: dict | None) -> tuple[list[str], list[str]]:
    """(training subjects, held-out subjects) named by a bundle's `training` metadata (empty when unknown)."""
    training = training or {}
    used = [subject_id(scan) for scan in training.get("scans") or []]
    held = [subject_id(name) for name in training.get("held_out") or []]
    return sorted(set(used)), sorted(set(held) - set(used))


def choose_subjects(
    present: Iterable[str],
    training: Sequence[str] = (),
    held_out: Sequence[str] = (),
    requested: Sequence[str] | None = None,
    training_fit: bool = False,
) -> SubjectChoice:
    """Pick the evaluated subjects of a root holding `present`; `training`/`held_out` are the bundle's lists.
    `training_fit`: the training subjects instead (those of `requested`, if given), for a check of fit."""
    present = sorted(set(present))
    trained = set(training)
    if training_fit:
        return _training_choice(present, trained, requested)
    excluded = [s for s in present if s in trained]
    usable = [s for s in present if s not in trained]
    if requested:
        wanted = list(dict.fromkeys(subject_id(s) for s in requested))
        missing = [s for s in wanted if s not in present]
        if missing:
            raise InputError(f"--subjects: {', '.join(missing)} not in the data root")
        refused = [s for s in wanted if s in trained]
        if refused:
            raise InputError(
                f"--subjects: {', '.join(refused)} in the model's training list; a model is evaluated only "
                "on scans it never saw (--training-subjects evaluates them for a check of fit)"
            )
        evaluated, reason = sorted(wanted), "chosen with --subjects (none in the model's training list)"
    elif any(s in set(held_out) for s in usable):
        evaluated = [s for s in usable if s in set(held_out)]
        reason = "the model's held-out subjects"
    elif not usable:
        raise InputError(
            f"every subject of the data root is in the model's training list ({len(excluded)}); "
            "give a data set with scans the model never saw"
        )
    else:
        evaluated = usable
        reason = (
            "every subject not in the model's training list"
            if trained
            else "every subject (the model names no training scans)"
        )
    rest = [s for s in present if s not in set(evaluated)]
    library = rest or present  # leave-one-out: retrieval never uses the case's own subject
    named = sorted({subject_id(s) for s in requested}) if requested else None
    return SubjectChoice(evaluated, library, reason, excluded, named)


TRAINING_FIT_REASON = (
    "the model's training subjects, with --training-subjects: a check of fit, not of completion quality"
)


def _training_choice(present: list[str], trained: set[str], requested: Sequence[str] | None) -> SubjectChoice:
    """The training subjects present in the root (restricted to `requested`), retrieval over the rest."""
    if not trained:
        raise InputError("--training-subjects: the model names no training scans")
    wanted = [s for s in present if s in trained]
    if requested:
        named = list(dict.fromkeys(subject_id(s) for s in requested))
        foreign = [s for s in named if s not in wanted]
        if foreign:
            raise InputError(
                f"--subjects: {', '.join(foreign)} not among the model's training subjects in the data root"
            )
        wanted = sorted(named)
    if not wanted:
        raise InputError("--training-subjects: none of the model's training subjects is in the data root")
    evaluated = set(wanted)
    rest = [s for s in present if s not in evaluated]
    return SubjectChoice(
        wanted, rest or present, TRAINING_FIT_REASON, [], wanted if requested else None, training_fit=True
    )
