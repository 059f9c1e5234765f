"""Eq. 8 / Eq. 9 of the paper's trade-off point method on hand-made 3D arrays (numpy only, instant)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inrv.errors import UsageError
from inrv.tune.grid import parse_grid
from inrv.tune.tradeoff import constraint_arrays, objective_terms, pareto_front, trade_off

AXES = {"ds": [2, 4], "nc": [4, 8], "sn": [30, 90, 230]}


def hand_made():
    """PSNR rises with every axis; SSIM too; CR falls with nc and sn. Built so that f (beta = 0) is lowest
    at (ds 2, nc 4, sn 90): 1/30 + 0.05 + 0.05 beats (2, 4, 30): 1/25 + 0.2 + 0.02 and (2, 4, 230)."""
    psnr = np.full((2, 2, 3), 20.0)
    ssim = np.full((2, 2, 3), 0.5)
    cr = np.full((2, 2, 3), 0.5)
    psnr[0, 0] = [25.0, 30.0, 31.0]
    ssim[0, 0] = [0.80, 0.95, 0.96]
    cr[0, 0] = [0.98, 0.95, 0.70]
    return psnr, ssim, cr


def test_objective_picks_the_expected_cell():
    psnr, ssim, cr = hand_made()
    t = trade_off(AXES, psnr, ssim, cr, beta=0.0)
    assert t.index == (0, 0, 1)
    assert t.point == {"ds": 2, "nc": 4, "sn": 90}
    f = 1 / 30 + (1 - 0.95) + (1 - 0.95)
    assert t.objective[0, 0, 1] == pytest.approx(f)
    assert t.lagrangian[0, 0, 1] == pytest.approx(f)        # c_ds = c_nc = 0, c_sn = 0.5, beta = 0


def test_penalty_and_lagrange_factors_move_the_point():
    psnr, ssim, cr = hand_made()
    # beta large: the penalty beta/2 * 0.5^2 on sn 90 outweighs its 0.11 gain in f -> the cheapest corner
    t = trade_off(AXES, psnr, ssim, cr, beta=2.0)
    assert t.point == {"ds": 2, "nc": 4, "sn": 30}
    l90 = 1 / 30 + 0.05 + 0.05 + 0.5 * 2.0 * 0.25
    assert t.lagrangian[0, 0, 1] == pytest.approx(l90)
    # alpha on the sn constraint rewards going along sn (the -alpha c term of Eq. 8)
    t = trade_off(AXES, psnr, ssim, cr, alpha=(0, 0, 0.5), beta=0.0)
    assert t.point["sn"] == 230
    assert t.lagrangian[0, 0, 2] == pytest.approx(1 / 31 + 0.04 + 0.30 - 0.5)


def test_constraints_are_ranks_in_unit_interval():
    cs = constraint_arrays((2, 1, 3))
    assert cs[0][:, 0, 0].tolist() == [0.0, 1.0]
    assert cs[1].max() == 0.0                                # one value: no constraint
    assert cs[2][0, 0].tolist() == [0.0, 0.5, 1.0]


def test_marginals_are_means_over_the_other_axes_and_nan_cells_are_left_out():
    psnr, ssim, cr = hand_made()
    psnr[1, 1, 2] = np.nan                                    # a failed cell
    t = trade_off(AXES, psnr, ssim, cr, beta=0.0)
    m = t.marginals("sn")
    # sn = 30: cells (0,0),(0,1),(1,0),(1,1) -> 1/25, 1/20, 1/20, 1/20
    assert m["1/PSNR"][0] == pytest.approx((1 / 25 + 3 / 20) / 4)
    assert m["1/PSNR"][2] == pytest.approx((1 / 31 + 2 / 20) / 3)   # the NaN cell is not counted
    assert m["1-CR"][1] == pytest.approx((0.05 + 3 * 0.5) / 4)
    assert t.slice_through_point("sn")["1-SSIM"] == pytest.approx([0.2, 0.05, 0.04])


def test_paper_table7_is_the_mean_marginal_of_its_tables():
    """A check of our Eq. 9 reading against the paper's own numbers: its Table 7 1-CR at DS = 1/2
    (0.23398) is the mean of 1 - CR over the DS = 1/2 rows of Tables 4-6 (3 NC x 11 SN)."""
    from importlib import util
    from pathlib import Path

    spec = util.spec_from_file_location("paper_tables", Path(__file__).resolve().parents[2] / "benchmarks"
                                        / "paper_tables.py")
    pt = util.module_from_spec(spec)
    spec.loader.exec_module(pt)
    axes, psnr, ssim, cr = pt.paper_arrays()
    t = trade_off(axes, psnr, ssim, cr, beta=0.0)
    assert t.marginals("ds")["1-CR"][0] == pytest.approx(0.23398, abs=1e-5)
    assert t.marginals("nc")["1-CR"][0] == pytest.approx(0.25709, abs=1e-5)
    assert t.marginals("sn")["1/PSNR"][0] == pytest.approx(0.02694, abs=1e-5)


def test_terms_handle_lossless_and_bad_cells():
    terms = objective_terms(np.array([math.inf, 0.0, 40.0]), np.array([1.0, 0.5, -0.9]), np.array([0.5, 0.5, 1.2]))
    assert terms["1/PSNR"][0] == 0.0 and math.isnan(terms["1/PSNR"][1]) and terms["1/PSNR"][2] == 0.025
    assert terms["1-SSIM"][2] == pytest.approx(0.1)        # |SSIM|, as Eq. 7 writes it
    assert terms["1-CR"][2] == pytest.approx(-0.2)         # CR may exceed the range; kept as measured
    with pytest.raises(ValueError):
        trade_off({"a": [1]}, np.array([np.nan]), np.array([0.5]), np.array([0.5]))
    with pytest.raises(ValueError):
        trade_off(AXES, np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), None)


def test_pareto_front():
    assert pareto_front([1, 2, 3, 2.5, 0.5], [10, 20, 25, 19, 5]) == [4, 0, 1, 2]


@pytest.mark.parametrize("tokens, msg", [
    (["ds=3"], "ds"), (["foo=1"], "unknown grid axis"), (["sn="], "empty"), (["sn=a,b"], "not a positive"),
    (["sn=0"], "positive"), (["nc=4", "nc=8"], "twice"), (["sn"], "AXIS=V1"), (["sn=50:30"], "range"),
])
def test_bad_grids_raise_usage_errors(tokens, msg):
    with pytest.raises(UsageError, match=msg):
        parse_grid(tokens)


def test_grid_parsing():
    g = parse_grid(["ds=1/2,4", "sn=30:70:20 nc=8,4,8"])
    assert g == {"ds": [2, 4], "nc": [4, 8], "sn": [30, 50, 70]}
    assert parse_grid(["levels=5", "width=8,16"], "latent") == {"levels": [5], "channels": [1, 2], "width": [8, 16]}
