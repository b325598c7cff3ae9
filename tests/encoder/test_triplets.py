"""Specification of unlabelled triplet sampling: where anchors, neighbours and opposites come from."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from encoder.triplets import Clip, TripletConfig, TripletSampler, held_out_groups, tile_starts

TILE = 500  # 5 s of a 10 s (1001-frame) clip, as in the thesis
GROUPS = ["a", "a", "b", "c", "c", "c", "d", "e"]
CLIPS = [Clip(1001, g) for g in GROUPS]


def every_triplet(sampler: TripletSampler, seeds=range(5), epochs=range(4)):
    return [t for s in seeds for e in epochs for t in sampler.epoch(s, e)]


@pytest.mark.parametrize("config", [TripletConfig(), TripletConfig(random_offsets=True),
                                    TripletConfig(neighbour="group"), TripletConfig(tile_s=2.0, random_offsets=True)])
def test_opposite_segment_never_comes_from_the_anchor_clip_or_its_group(config):
    for triplet in every_triplet(TripletSampler(CLIPS, TILE, config)):
        assert triplet.opposite.clip != triplet.anchor.clip
        assert GROUPS[triplet.opposite.clip] != GROUPS[triplet.anchor.clip]


def test_neighbour_is_a_different_tile_of_the_anchor_clip():
    for triplet in every_triplet(TripletSampler(CLIPS, TILE)):
        assert triplet.neighbour.clip == triplet.anchor.clip
        assert triplet.neighbour.start != triplet.anchor.start


def test_fixed_tiles_are_the_two_halves_of_a_ten_second_clip():
    assert tile_starts(1001, TILE) == [0, 500]
    for triplet in every_triplet(TripletSampler(CLIPS, TILE)):
        assert {triplet.anchor.start, triplet.neighbour.start} == {0, 500}
        assert triplet.opposite.start in (0, 500)


@pytest.mark.parametrize("tile", [200, 400, 500])
def test_random_offset_tiles_stay_inside_the_clip_and_do_not_overlap_when_two_fit(tile):
    for triplet in every_triplet(TripletSampler(CLIPS, tile, TripletConfig(random_offsets=True))):
        for t in (triplet.anchor, triplet.neighbour, triplet.opposite):
            assert 0 <= t.start <= 1001 - tile
        assert abs(triplet.anchor.start - triplet.neighbour.start) >= tile


def test_random_offset_tiles_overlap_but_differ_when_two_do_not_fit():
    for triplet in every_triplet(TripletSampler(CLIPS, 700, TripletConfig(random_offsets=True))):
        assert triplet.anchor.start != triplet.neighbour.start


def test_group_option_takes_the_neighbour_from_another_clip_of_the_same_group_when_there_is_one():
    sampler = TripletSampler(CLIPS, TILE, TripletConfig(neighbour="group"))
    for triplet in every_triplet(sampler):
        assert GROUPS[triplet.neighbour.clip] == GROUPS[triplet.anchor.clip]
        has_mates = GROUPS.count(GROUPS[triplet.anchor.clip]) > 1
        assert (triplet.neighbour.clip != triplet.anchor.clip) == has_mates


def test_same_seed_gives_same_triplets_and_another_seed_or_epoch_differs():
    sampler = TripletSampler(CLIPS, TILE, TripletConfig(random_offsets=True))
    assert sampler.epoch(seed=7, epoch=3) == TripletSampler(CLIPS, TILE, TripletConfig(random_offsets=True)).epoch(7, 3)
    assert sampler.epoch(seed=7, epoch=3) != sampler.epoch(seed=8, epoch=3)
    assert sampler.epoch(seed=7, epoch=3) != sampler.epoch(seed=7, epoch=4)


def test_every_clip_is_an_anchor_once_per_epoch():
    triplets = TripletSampler(CLIPS, TILE).epoch(seed=0)
    assert [t.anchor.clip for t in triplets] == list(range(len(CLIPS)))


def test_sampler_sees_only_lengths_groups_recording_domains_and_source_packages_never_labels():
    assert [f.name for f in dataclasses.fields(Clip)] == ["frames", "group", "domain", "packages"]


def test_clip_not_longer_than_a_tile_is_a_clear_error():
    with pytest.raises(ValueError, match="not longer than one tile"):
        TripletSampler([Clip(1001, "a"), Clip(400, "b")], TILE)


def test_a_single_group_cannot_give_opposites():
    with pytest.raises(ValueError, match="two groups"):
        TripletSampler([Clip(1001, "a"), Clip(1001, "a")], TILE)


def test_unknown_neighbour_option_is_rejected():
    with pytest.raises(ValueError, match="neighbour"):
        TripletConfig(neighbour="session")


def test_held_out_validation_clips_keep_whole_groups_together():
    groups = [f"g{i // 3}" for i in range(60)]
    train, validation = held_out_groups(groups, 0.2, seed=1)
    assert sorted(train + validation) == list(range(60))
    assert {groups[i] for i in train}.isdisjoint({groups[i] for i in validation})
    assert 10 <= len(validation) <= 15
    assert held_out_groups(groups, 0.2, seed=1) == (train, validation)


def test_tiles_keep_their_level_unless_gain_augmentation_is_asked_for():
    sampler = TripletSampler(CLIPS, TILE)
    assert not sampler.gains_db(0, seed=1, epoch=2).any()


def test_gain_augmentation_draws_an_independent_level_per_tile_within_the_range_and_repeats_under_a_seed():
    sampler = TripletSampler(CLIPS, TILE, TripletConfig(gain_db=6.0))
    gains = [sampler.gains_db(i, seed=1, epoch=e) for i in range(len(CLIPS)) for e in range(20)]
    assert all(g.shape == (3,) and (abs(g) <= 6.0).all() for g in gains)
    assert all(len(set(g.tolist())) == 3 for g in gains)  # anchor and neighbour get different levels
    assert (sampler.gains_db(3, seed=1, epoch=4) == sampler.gains_db(3, seed=1, epoch=4)).all()
    assert (sampler.gains_db(3, seed=1, epoch=4) != sampler.gains_db(3, seed=2, epoch=4)).all()


def test_negative_gain_range_is_rejected():
    with pytest.raises(ValueError, match="gain_db"):
        TripletConfig(gain_db=-1.0)


DOMAINS = ["x", "x", "x", "y", "y", "x", "y", "y"]
DOMAIN_CLIPS = [Clip(1001, g, d) for g, d in zip(GROUPS, DOMAINS)]


def test_same_domain_opposites_come_from_the_anchors_recording_domain_and_still_another_group():
    sampler = TripletSampler(DOMAIN_CLIPS, TILE, TripletConfig(same_domain_opposites=1.0))
    for triplet in every_triplet(sampler):
        assert DOMAINS[triplet.opposite.clip] == DOMAINS[triplet.anchor.clip]
        assert GROUPS[triplet.opposite.clip] != GROUPS[triplet.anchor.clip]


def test_by_default_opposites_ignore_domains_and_a_fraction_mixes_both():
    def same_domain_share(config):
        triplets = every_triplet(TripletSampler(DOMAIN_CLIPS, TILE, config), seeds=range(20))
        return sum(DOMAINS[t.opposite.clip] == DOMAINS[t.anchor.clip] for t in triplets) / len(triplets)

    assert 0.2 < same_domain_share(TripletConfig()) < 0.6
    assert same_domain_share(TripletConfig(same_domain_opposites=0.5)) > same_domain_share(TripletConfig()) + 0.15


def test_a_domain_with_a_single_group_falls_back_to_any_other_group():
    clips = [Clip(1001, "a", "lonely"), Clip(1001, "b", "z"), Clip(1001, "c", "z")]
    for triplet in every_triplet(TripletSampler(clips, TILE, TripletConfig(same_domain_opposites=1.0))):
        assert clips[triplet.opposite.clip].group != clips[triplet.anchor.clip].group


def test_same_domain_probability_must_be_a_probability():
    with pytest.raises(ValueError, match="same_domain_opposites"):
        TripletConfig(same_domain_opposites=1.5)


# ----------------------------------------------------------------------------------- P x K batches

from encoder.triplets import ClipBatchSampler  # noqa: E402


def pk_clips() -> list[Clip]:
    """12 groups of 2 clips each, in 3 domains of 4 groups."""
    return [Clip(500, f"g{g}", f"d{g // 4}") for g in range(12) for _ in range(2)]


def test_pk_batch_has_p_distinct_groups_with_k_tiles_each_and_ids_by_group():
    clips = pk_clips()
    sampler = ClipBatchSampler(clips, 100, TripletConfig(sampler="pk", clips_per_batch=6, tiles_per_clip=3, random_offsets=True))
    tiles, ids = sampler.batch(seed=1, step=0)
    assert len(tiles) == 18 and ids == [i // 3 for i in range(18)]
    groups_by_id = {}
    for tile, place in zip(tiles, ids):
        groups_by_id.setdefault(place, set()).add(clips[tile.clip].group)
        assert 0 <= tile.start <= 400
    assert all(len(g) == 1 for g in groups_by_id.values())  # a place holds one group
    assert len({next(iter(g)) for g in groups_by_id.values()}) == 6  # and the places hold distinct groups


def test_pk_tiles_of_a_place_come_from_one_clip_unless_neighbours_are_group_wide():
    clips = pk_clips()
    one = ClipBatchSampler(clips, 100, TripletConfig(sampler="pk", clips_per_batch=4, tiles_per_clip=4, random_offsets=True))
    for step in range(5):
        tiles, ids = one.batch(0, step)
        for place in range(4):
            assert len({t.clip for t, i in zip(tiles, ids) if i == place}) == 1
    wide = ClipBatchSampler(clips, 100, TripletConfig(sampler="pk", clips_per_batch=4, tiles_per_clip=4, neighbour="group", random_offsets=True))
    mixed = [len({t.clip for t, i in zip(*wide.batch(0, step)) if i == place}) for step in range(5) for place in range(4)]
    assert max(mixed) == 2


def test_pk_same_domain_opposites_fill_the_batch_in_blocks_from_one_domain():
    clips = pk_clips()
    config = TripletConfig(sampler="pk", clips_per_batch=8, tiles_per_clip=2, same_domain_opposites=1.0)
    sampler = ClipBatchSampler(clips, 100, config)
    for step in range(10):
        tiles, ids = sampler.batch(0, step)
        domains = [clips[tiles[2 * place].clip].domain for place in range(8)]
        assert domains[0:4] == [domains[0]] * 4 and domains[4:8] == [domains[4]] * 4  # 4 groups per domain


def test_pk_batches_are_a_pure_function_of_seed_and_step():
    sampler = ClipBatchSampler(pk_clips(), 100, TripletConfig(sampler="pk", clips_per_batch=4, tiles_per_clip=2, random_offsets=True))
    assert sampler.batch(3, 7) == sampler.batch(3, 7)
    assert sampler.batch(3, 7) != sampler.batch(3, 8)


def test_pk_batch_larger_than_the_groups_is_a_clear_error():
    with pytest.raises(ValueError, match="lower clips_per_batch"):
        ClipBatchSampler(pk_clips(), 100, TripletConfig(sampler="pk", clips_per_batch=13))


# ------------------------------------------- same-moment positives, package balance and down-weighting

from encoder.triplets import group_weights  # noqa: E402


def test_same_moment_cuts_each_moment_of_a_group_twice_so_two_capture_chains_hear_one_tile():
    clips = pk_clips()
    config = TripletConfig(sampler="pk", clips_per_batch=4, tiles_per_clip=4, random_offsets=True, neighbour="group", same_moment=True)
    sampler = ClipBatchSampler(clips, 100, config)
    distinct = []
    for step in range(5):
        tiles, ids = sampler.batch(0, step)
        assert len(tiles) == 16 and ids == [i // 4 for i in range(16)]
        assert all(tiles[i] == tiles[i + 1] for i in range(0, 16, 2))  # each pair is one moment
        distinct += [tiles[i] != tiles[i + 2] for i in range(0, 16, 4)]
    assert sum(distinct) >= 18  # two moments per group (random offsets: two draws rarely coincide)


def test_same_moment_needs_an_even_k_and_the_pk_sampler():
    with pytest.raises(ValueError, match="tiles_per_clip must be even"):
        TripletConfig(sampler="pk", tiles_per_clip=3, same_moment=True)
    with pytest.raises(ValueError, match="need sampler"):
        TripletConfig(sampler="random", same_moment=True)


def package_clips() -> list[Clip]:
    """Package 'big' holds 9 groups, 'small' 1 group, 'other' 2 groups; 'small' also feeds a labelled set
    (its clips carry a second package, as corpus chunks with a bed do)."""
    return ([Clip(500, f"big{g}", "d", ("big",)) for g in range(9)] + [Clip(500, "small0", "d", ("small", "bed"))]
            + [Clip(500, f"other{g}", "d", ("other",)) for g in range(2)])


def test_groups_are_equally_likely_by_default_and_package_balance_makes_each_package_equally_likely():
    clips = package_clips()
    names = sorted({c.group for c in clips})
    assert np.allclose(group_weights(clips, names, TripletConfig(sampler="pk")), 1 / 12)
    balanced = dict(zip(names, group_weights(clips, names, TripletConfig(sampler="pk", balance="package"))))
    assert balanced["small0"] == pytest.approx(1 / 3)
    assert sum(v for k, v in balanced.items() if k.startswith("big")) == pytest.approx(1 / 3)
    assert balanced["other1"] == pytest.approx(1 / 6)


def test_groups_sharing_any_package_with_the_labelled_sets_are_drawn_with_the_shared_weight():
    clips = package_clips()
    names = sorted({c.group for c in clips})
    config = TripletConfig(sampler="pk", shared_package_weight=0.25, shared_packages_from=("labelled",))
    weights = dict(zip(names, group_weights(clips, names, config, frozenset({"bed", "other"}))))
    # small0 (via its bed) and the two 'other' groups weigh a quarter of each 'big' group
    assert weights["small0"] == pytest.approx(weights["big0"] / 4) and weights["other0"] == pytest.approx(weights["big0"] / 4)
    assert sum(weights.values()) == pytest.approx(1.0)


def test_package_balanced_batches_draw_a_small_package_as_often_as_a_big_one():
    clips = package_clips()
    config = TripletConfig(sampler="pk", clips_per_batch=2, tiles_per_clip=2, balance="package")
    sampler = ClipBatchSampler(clips, 100, config)
    counts = {"big": 0, "small": 0}
    for step in range(600):
        tiles, _ = sampler.batch(0, step)
        first = clips[tiles[0].clip].packages[0]
        counts[first] = counts.get(first, 0) + 1
    assert abs(counts["small"] - counts["big"]) < 60  # each about 200 of 600 (uniform groups: 50 vs 450)


def test_a_shared_package_weight_without_the_labelled_sets_or_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="go together"):
        TripletConfig(sampler="pk", shared_package_weight=0.5)
    with pytest.raises(ValueError, match="go together"):
        TripletConfig(sampler="pk", shared_packages_from=("../shared/data/homesounds",))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        TripletConfig(sampler="pk", shared_package_weight=0.0, shared_packages_from=("x",))
    with pytest.raises(ValueError, match="balance"):
        TripletConfig(sampler="pk", balance="licence")


def test_the_new_sampling_options_round_trip_through_the_config_dict():
    config = TripletConfig(sampler="pk", same_moment=True, balance="package", shared_package_weight=0.5,
                           shared_packages_from=("../shared/data/homesounds",))
    assert TripletConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["shared_packages_from"] == ["../shared/data/homesounds"]
