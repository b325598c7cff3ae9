"""Specification of `MicsById`, the mic of every window an approximate similarity index holds, two bytes per id."""

from __future__ import annotations

import numpy as np
import pytest

from service.store.similarity_mics import ABSENT, MicsById


def test_codes_follow_window_ids_added_in_any_order_and_ids_not_held_read_absent() -> None:
    mics = MicsById()
    mics.add(np.array([105, 103, 101]), np.array(["hall", "attic", "hall"], dtype=object))
    mics.add(np.array([99, 110]), np.array(["kitchen", "attic"], dtype=object))  # below and beyond the span
    codes = mics.codes_of(np.array([99, 100, 101, 103, 105, 110, 111, 5]))
    names = [mics.names[c] if c != ABSENT else None for c in codes]
    assert names == ["kitchen", None, "hall", "attic", "hall", "attic", None, None]
    assert len(mics) == 5 and dict(zip(mics.names, mics.rows.tolist())) == {"attic": 2, "hall": 2, "kitchen": 1}


def test_wanted_marks_the_asked_mics_and_never_an_absent_id() -> None:
    mics = MicsById()
    mics.add(np.array([1, 2, 3]), np.array(["hall", "attic", "hall"], dtype=object))
    wanted = mics.wanted(["hall", "garage"])
    codes = mics.codes_of(np.array([1, 2, 3, 4]))
    assert wanted[mics.index_of(codes, wanted)].tolist() == [True, False, True, False]
    everything = mics.wanted(None)
    assert everything[mics.index_of(codes, everything)].tolist() == [True, True, True, False]


def test_remove_returns_the_ids_held_and_gives_back_the_oldest_slots() -> None:
    mics = MicsById()
    ids = np.arange(1000, 5000)
    mics.add(ids, np.where(ids % 2 == 0, "hall", "attic").astype(object))
    gone = mics.remove(np.concatenate([np.arange(1000, 2500), [7, 99_999]]))  # retention: the oldest, and two never held
    assert sorted(gone.tolist()) == list(range(1000, 2500)) and len(mics) == 2500
    assert mics.first == 2500 and mics.nbytes < 2 * 2500 + 64  # the dropped run's slots are given back
    assert (mics.codes_of(np.arange(1000, 2500)) == ABSENT).all() and (mics.codes_of(np.arange(2500, 5000)) != ABSENT).all()
    assert dict(zip(mics.names, mics.rows.tolist())) == {"attic": 1250, "hall": 1250}


def test_a_year_of_four_microphones_takes_about_two_bytes_per_window() -> None:
    mics = MicsById()
    for begin in range(1, 1_000_001, 20_000):  # as the store loads them
        ids = np.arange(begin, begin + 20_000)
        mics.add(ids, np.array([f"mic{i % 4}" for i in range(20_000)], dtype=object))
    assert len(mics) == 1_000_000 and mics.nbytes / 1_000_000 < 3.1  # capacity grows by half: at most 3 B


def test_more_names_than_codes_is_refused() -> None:
    mics = MicsById()
    mics.names = [str(i) for i in range(int(ABSENT))]
    with pytest.raises(ValueError, match="microphone names"):
        mics.add(np.array([1]), np.array(["one more"], dtype=object))
