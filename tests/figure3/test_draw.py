"""figure3.draw: every kind of affinity draws; one arrow per key, alpha by weight."""

from __future__ import annotations

import pytest
import torch

from helpers.figure3 import make_model
from nlrepro.figure3 import capture as cap
from nlrepro.figure3 import draw as drw
from nlrepro.figure3 import measure as msr


def test_panel_windows_span_the_clip():
    assert drw.panel_windows(8, 4) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert drw.panel_windows(4, 4) == [[0], [1], [2], [3]]
    assert drw.panel_windows(2, 4) == [[0], [1]]
    assert sum(drw.panel_windows(7, 4), []) == list(range(7))


@pytest.mark.parametrize("instantiation, scope", [("dot_product", "space"),
                                                  ("concatenation", "time"),
                                                  ("gaussian", "spacetime")])
def test_drawing_works_for_every_kind_of_affinity(instantiation, scope):
    """Arrows go only to reachable keys, one per key up to --top; signed weights are fine."""
    model = make_model(instantiation, scope)
    att = cap.capture(model, torch.randn(1, 3, 16, 32, 32))
    queries = [0, att.query.size - 1]
    frames = torch.zeros(16, 32, 32, 3, dtype=torch.uint8)
    fig = drw.draw(frames, att, queries, top=5)
    arrows = [a for a in fig.artists if (a.get_gid() or "").startswith("arrow")]
    for q in queries:
        mine = [a.get_gid().split() for a in arrows if a.get_gid().split()[1] == f"q{q}"]
        assert len(mine) == min(5, int(att.reachable[q].sum()))
        assert all(att.reachable[q, int(g[2][1:])] for g in mine)
    heat = [ax for ax in fig.axes if ax.get_title().startswith("Σ affinity")]
    assert len(heat) == 4
    # The heat-map panels together hold the whole row of query 0.
    total = sum(float(ax.get_title().rsplit("=", 1)[1]) for ax in heat)
    assert total == pytest.approx(float(att.weights[0].sum()), abs=4e-3)
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_drawing_has_one_arrow_per_key_with_alpha_by_weight(run):
    model = cap.load_classifier(run["ckpt"])
    clip = cap.load_clip(model.cfg, run["video"])
    att = cap.capture(model, clip.tensor)
    queries = msr.auto_queries(att, 2)
    fig = drw.draw(clip.frames, att, queries, top=3)
    arrows = [a for a in fig.artists if (a.get_gid() or "").startswith("arrow")]
    assert len(arrows) == 6
    for q in queries:
        mine = [a for a in arrows if a.get_gid().split()[1] == f"q{q}"]
        weights = [float(a.get_gid().split()[3][1:]) for a in mine]
        keys, expected = msr.top_keys(att, q, 3)
        assert weights == pytest.approx(expected, rel=1e-5)
        alphas = [a.get_alpha() for a in mine]
        assert alphas[0] == pytest.approx(1.0) and alphas == sorted(alphas, reverse=True)
    # The clip on screen is the clip the model saw (un-normalised).
    d = model.cfg.data
    shown = clip.frames.permute(3, 0, 1, 2).float() / 255
    torch.testing.assert_close((clip.tensor[0] * d.std + d.mean), shown, atol=1e-5, rtol=0)
    import matplotlib.pyplot as plt
    plt.close(fig)
