"""Which subjects a benchmark evaluates: never the model's training scans, its held-out ones when present; the
training scans only when asked for a check of fit, and then said so."""

from __future__ import annotations

import pytest

from fovcompletion.benchmark.subjects import bundle_lists, choose_subjects
from fovcompletion.errors import InputError

TRAINING = ["sub-t1", "sub-t2"]
HELD_OUT = ["sub-h1", "sub-h2"]


def test_the_bundle_lists_come_from_its_training_metadata():
    training = {"scans": [{"subject": "sub-t1"}, {"subject": "t2"}], "held_out": ["h1", "sub-h2"]}
    assert bundle_lists(training) == (TRAINING, HELD_OUT)
    assert bundle_lists(None) == ([], [])


def test_held_out_subjects_are_used_when_the_root_has_them():
    choice = choose_subjects(["sub-t1", "sub-t2", "sub-h1", "sub-x"], TRAINING, HELD_OUT)
    assert choice.evaluated == ["sub-h1"]
    assert choice.reason == "the model's held-out subjects"
    assert choice.excluded_training == TRAINING
    assert choice.library == ["sub-t1", "sub-t2", "sub-x"]  # never the evaluated subject


def test_a_foreign_root_is_evaluated_whole_with_leave_one_out_retrieval():
    choice = choose_subjects(["sub-a", "sub-b", "sub-c"], TRAINING, HELD_OUT)
    assert choice.evaluated == ["sub-a", "sub-b", "sub-c"]
    assert choice.reason == "every subject not in the model's training list"
    assert choice.library == ["sub-a", "sub-b", "sub-c"]
    mixed = choose_subjects(["sub-a", "sub-t1"], TRAINING, HELD_OUT)
    assert mixed.evaluated == ["sub-a"] and mixed.excluded_training == ["sub-t1"]
    unnamed = choose_subjects(["sub-a", "sub-b"])
    assert unnamed.evaluated == ["sub-a", "sub-b"] and "names no training scans" in unnamed.reason


def test_subjects_restrict_the_choice_but_never_to_a_training_scan():
    choice = choose_subjects(["sub-a", "sub-b", "sub-h1", "sub-t1"], TRAINING, HELD_OUT, ["b", "sub-a"])
    assert choice.evaluated == ["sub-a", "sub-b"]
    assert choice.requested == ["sub-a", "sub-b"]
    assert "--subjects" in choice.reason
    with pytest.raises(InputError, match="sub-t1 in the model's training list"):
        choose_subjects(["sub-a", "sub-t1"], TRAINING, HELD_OUT, ["sub-t1"])
    with pytest.raises(InputError, match="sub-zz not in the data root"):
        choose_subjects(["sub-a"], TRAINING, HELD_OUT, ["sub-zz"])


def test_a_root_of_training_scans_only_is_refused():
    with pytest.raises(InputError, match="every subject of the data root is in the model's training list"):
        choose_subjects(TRAINING, TRAINING, HELD_OUT)


def test_training_subjects_are_evaluated_only_when_asked_and_then_marked_as_a_check_of_fit():
    present = ["sub-a", "sub-h1", "sub-t1", "sub-t2"]
    choice = choose_subjects(present, TRAINING, HELD_OUT, training_fit=True)
    assert choice.evaluated == TRAINING and choice.training_fit
    assert "check of fit, not of completion quality" in choice.reason
    assert choice.library == ["sub-a", "sub-h1"]  # retrieval never from the evaluated subjects
    assert choice.to_dict()["training_fit"] is True
    assert not choose_subjects(present, TRAINING, HELD_OUT).to_dict()["training_fit"]
    assert choose_subjects(present, TRAINING, HELD_OUT, ["t2"], training_fit=True).evaluated == ["sub-t2"]
    with pytest.raises(InputError, match="sub-h1 not among the model's training subjects"):
        choose_subjects(present, TRAINING, HELD_OUT, ["sub-h1"], training_fit=True)
    with pytest.raises(InputError, match="names no training scans"):
        choose_subjects(present, training_fit=True)
    with pytest.raises(InputError, match="none of the model's training subjects"):
        choose_subjects(["sub-a"], TRAINING, HELD_OUT, training_fit=True)
