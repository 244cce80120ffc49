"""Every placement of the paper / official release, and the errors for impossible ones."""

import pytest

from nlrepro.config import ConfigError, ModelConfig, load_config
from nlrepro.models.placement import (R101_10_BLOCK_NOTE, compile_placement, positions,
                                      stage_blocks_of)

R50 = {"res2": 3, "res3": 4, "res4": 6, "res5": 3}
R101 = {"res2": 3, "res3": 4, "res4": 23, "res5": 3}
PROXY = {"res2": 1, "res3": 2, "res4": 3, "res5": 1}


def vnl_mod_rule(n: int, mod: int) -> list[int]:
    """VNL ``res_stage_nonlocal``: a block after idx when ``idx % mod == mod - 1``."""
    return [i for i in range(n) if i % mod == mod - 1]


def test_stage_blocks_of_depths_and_override():
    assert stage_blocks_of(ModelConfig(depth=50)) == R50
    assert stage_blocks_of(ModelConfig(depth=101)) == R101
    assert stage_blocks_of(ModelConfig(depth=101, stage_blocks=[1, 2, 3, 1])) == PROXY
    with pytest.raises(ValueError, match=r"\[1, 2, 3\]"):
        stage_blocks_of(ModelConfig(stage_blocks=[1, 2, 3]))
    with pytest.raises(ValueError, match="positive"):
        stage_blocks_of(ModelConfig(stage_blocks=[1, 0, 3, 1]))


@pytest.mark.parametrize("stage, r50, r101", [
    ("res2", [1], [1]), ("res3", [2], [2]), ("res4", [4], [21]), ("res5", [1], [1])])
def test_one_block_sits_right_before_the_last_residual_block(stage, r50, r101):
    """Tables 2a/2b: 'right before the last residual block of a stage' = after block n-2."""
    assert compile_placement(1, [stage], R50, 50) == {stage: r50}
    assert compile_placement(1, [stage], R101, 101) == {stage: r101}


def test_one_block_defaults_to_res4_and_handles_single_block_stages():
    assert compile_placement(1, None, R50, 50) == {"res4": [4]}
    # A 1-block stage has no "before the last": the NL block follows its only block.
    assert compile_placement(1, ["res2"], PROXY, 50) == {"res2": [0]}
    assert compile_placement(1, ["res5", "res3"], PROXY, 50) == {"res3": [0], "res5": [0]}


def test_five_and_ten_blocks_match_the_official_release():
    assert compile_placement(5, None, R50, 50) == {"res3": [1, 3], "res4": [1, 3, 5]}
    assert compile_placement(5, ["res4", "res3"], R50, 50) == {"res3": [1, 3],
                                                                "res4": [1, 3, 5]}
    assert compile_placement(5, None, R101, 101) == {"res3": [1, 3], "res4": [6, 13, 20]}
    assert compile_placement(10, None, R50, 50) == {"res3": [0, 1, 2, 3],
                                                    "res4": [0, 1, 2, 3, 4, 5]}
    # VNL's code: LAYER_MOD 2 (5-block) / 1 (10-block); R101 res3 mod 2, res4 mod 4*2-1 = 7.
    assert compile_placement(5, None, R50, 50) == {"res3": vnl_mod_rule(4, 2),
                                                   "res4": vnl_mod_rule(6, 2)}
    assert compile_placement(5, None, R101, 101)["res4"] == vnl_mod_rule(23, 7)
    assert compile_placement(10, None, R50, 50) == {"res3": vnl_mod_rule(4, 1),
                                                    "res4": vnl_mod_rule(6, 1)}


def test_r101_ten_blocks_is_our_documented_choice():
    placed = compile_placement(10, None, R101, 101)
    assert placed == {"res3": [0, 1, 2, 3], "res4": [2, 5, 8, 11, 14, 17]}
    assert sum(map(len, placed.values())) == 10
    assert ", ".join(positions(placed)) in R101_10_BLOCK_NOTE


def test_narrow_stages():
    # (1,2,3,1): 5 = every block of res3 + res4; 10 does not fit.
    assert compile_placement(5, None, PROXY, 50) == {"res3": [0, 1], "res4": [0, 1, 2]}
    with pytest.raises(ValueError, match=r"10 does not fit.*res3 holds 2.*valid block counts "
                                         r"here: \[0, 1, 5\]"):
        compile_placement(10, None, PROXY, 50)
    # Stages as large as R50's get the R50 indices.
    assert compile_placement(10, None, {**PROXY, "res3": 4, "res4": 6}, 50) == \
        compile_placement(10, None, R50, 50)
    with pytest.raises(ValueError, match="res4 holds 2"):
        compile_placement(5, None, {**PROXY, "res4": 2}, 50)


def test_fill_small_stages_takes_every_block_of_a_small_stage():
    """The proxy's opt-in: 10 blocks on (1,2,3,1) = every res3 + res4 block, as 5 is."""
    every = {"res3": [0, 1], "res4": [0, 1, 2]}
    assert compile_placement(10, None, PROXY, 50, fill=True) == every
    assert compile_placement(5, None, PROXY, 50, fill=True) == every
    # Large enough stages are unaffected.
    assert compile_placement(10, None, R50, 50, fill=True) == compile_placement(10, None, R50, 50)
    assert compile_placement(10, None, {**PROXY, "res3": 3, "res4": 3}, 50, fill=True) == \
        {"res3": [0, 1, 2], "res4": [0, 1, 2]}


def test_explicit_placements_taken_as_is():
    given = {"res4": [5, 1, 3], "res3": [3, 1]}
    assert compile_placement(given, None, R50, 50) == {"res3": [1, 3], "res4": [1, 3, 5]}
    assert compile_placement([[], [1, 3], [1, 3, 5], []], None, R50, 50) == \
        {"res3": [1, 3], "res4": [1, 3, 5]}
    assert compile_placement({"res2": []}, None, R50, 50) == {}
    assert compile_placement(0, ["res3"], R50, 50) == {}
    assert positions({"res4": [1], "res3": [0, 2]}) == ["res3.0", "res3.2", "res4.1"]


@pytest.mark.parametrize("blocks, stages, words", [
    (7, None, ["7", "[0, 1, 5, 10]"]),
    (3, None, ["3", "[0, 1, 5, 10]"]),
    (True, None, ["True", "[0, 1, 5, 10]"]),
    (1, ["res6"], ["'res6'", "'res2', 'res3', 'res4', 'res5'"]),
    (5, ["res2", "res3"], ["['res2', 'res3']", "['res3', 'res4']"]),
    ({"res6": [0]}, None, ["'res6'", "'res5'"]),
    ({"res4": [6]}, None, ["6", "0..5"]),
    ({"res4": [-1]}, None, ["-1", "0..5"]),
    ({"res4": [1, 1]}, None, ["twice", "[1, 1]"]),
    ([[1]], None, ["[[1]]", "4 index lists"]),
])
def test_impossible_placements_name_the_bad_value_and_the_valid_ones(blocks, stages, words):
    with pytest.raises(ValueError) as err:
        compile_placement(blocks, stages, R50, 50)
    for word in words:
        assert word in str(err.value)


def test_config_validation_uses_the_placement():
    cfg = load_config("kinetics", sets=["model.depth=101", "model.nonlocal.blocks=5"])
    assert compile_placement(5, None, stage_blocks_of(cfg.model), 101)["res4"] == [6, 13, 20]
    with pytest.raises(ValueError, match="'res6'"):
        load_config("kinetics", sets=["model.nonlocal.blocks={res6: [0]}"])
    with pytest.raises((ValueError, ConfigError), match="index 9"):
        load_config("kinetics", sets=["model.nonlocal.blocks={res3: [9]}"])
