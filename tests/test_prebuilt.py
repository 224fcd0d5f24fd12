"""data/prebuilt/: the refusal classifier, its features and the reward model that the
defaults derive from the shipped data, shipped so that a fresh clone reads them instead
of spending minutes on them. With an empty cache nothing is fitted or embedded again
(fitting and embedding are made to fail); what ships agrees with what the code would
build (features of a few completions embedded again, the classifier refitted on the
shipped features). When this fails after a change to the data or the code, rerun
`scripts/prebuild.py`."""

from __future__ import annotations

import numpy as np
import pytest

from saferinstruct.evaluate import reward as reward_defaults
from saferinstruct.measures import refusal
from saferinstruct.preferences import load_hh


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFER_INSTRUCT_CACHE", str(tmp_path / "cache"))
    for cached in (refusal._cached_fit, refusal._load_cached, reward_defaults.default_reward_model):
        cached.cache_clear()
    yield tmp_path / "cache"
    for cached in (refusal._cached_fit, refusal._load_cached, reward_defaults.default_reward_model):
        cached.cache_clear()


def test_a_fresh_clone_reads_the_prebuilt_models_without_fitting(empty_cache, monkeypatch):
    def refuse(*a, **kw):
        raise AssertionError("computed again although data/prebuilt/ has it")

    monkeypatch.setattr(refusal, "features", refuse)
    monkeypatch.setattr(refusal, "fit", refuse)
    monkeypatch.setattr(reward_defaults, "fit", refuse)
    clf = refusal.default_classifier()
    assert len(clf.trained_on) == 3
    lofo = refusal.leave_one_file_out()  # features of all three files
    assert lofo["min_classifier"] > 0.5
    one = refusal.refusal_agreement(refusal.shipped_files()[0])  # a two-file classifier
    assert "refit_without" in one
    rm = reward_defaults.default_reward_model()
    assert rm.n_train == len(load_hh(split="train")) and rm.accuracy > 0.5
    assert not empty_cache.exists() or not any(empty_cache.rglob("*.np*")), "nothing rebuilt"


def test_what_ships_is_what_the_code_builds(empty_cache):
    data = refusal.load_labelled(refusal.shipped_files()[0])
    stored = data.x
    again = refusal.features(data.completions[:4])
    assert np.allclose(stored[:4], again, atol=1e-4)
    files = [refusal.load_labelled(p) for p in refusal.shipped_files()]
    refit = refusal._fit_labelled(files)
    shipped = refusal.default_classifier()
    # fitted on another machine of this kind: the solver's float32 sums differ in the
    # last digits (2.6e-5 at most on a 2026-12 machine), never in a label
    assert np.allclose(refit.coef, shipped.coef, atol=1e-4)
    assert refit.classes == shipped.classes
    for f in files:
        assert refit.predict_features(f.x) == shipped.predict_features(f.x)
