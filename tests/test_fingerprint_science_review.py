"""Review of the fingerprint and its figures as a neuroscientist reads them (real-data round).

Measured on ../shared/data (eegmat-dev rest files cut before their 2 s padding; hrv_rr_dev with the
ectopic filter on), medians over subjects of the channel means:
- EEG, config psd_freq_band [2, 40]: Higuchi FD rest 1.249 / arithmetic 1.269 (higher in 10 of 12),
  spectral beta 1.793 / 1.688 (flatter in 8 of 12), mf_width 0.629 / 0.617.
- EEG, default psd_freq_band [2, 80]: beta 4.006 / 3.781: the fit runs into the recordings' 45 Hz
  low-pass and 50 Hz notch, and no peak (not even alpha) is found to mask.
- RR: DFA alpha1 NSR 1.297 / CHF 0.744, alpha2 1.056 / 1.154, Higuchi FD 1.646 / 1.895.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fractals._fingerprint_config import resolve_config
from fractals.plotting import plot_fingerprint, plot_multifractal_spectrum


def _table(channels, value=1.2, nan_channels=()):
    rows = []
    for ch in channels:
        for m in ("higuchi_fd", "spectral_beta"):
            bad = ch in nan_channels
            rows.append({"channel": ch, "measure": m, "value": np.nan if bad else value, "ok": not bad,
                         "flag": "flat" if bad else "", "r2": np.nan})
    return pd.DataFrame(rows)


def test_mf_spectrum_legend_width_is_the_mean_of_the_series_widths():
    # Two channels whose f(alpha) arcs run in opposite directions: each is 0.50 wide, their mean curve
    # only 0.10. The fingerprint's mf_width (and its summary mean) is the mean of per-series widths, 0.50;
    # the legend said "width 0.10" (on eegmat sub-00 arithmetic: legend 0.69, fingerprint 0.72).
    alpha = np.array([[1.0, 0.9, 0.8, 0.5], [0.5, 0.8, 0.9, 1.0]])
    spec = {"q": np.array([-3.0, -1.0, 1.0, 3.0]), "tau": np.tile([-3.0, -1.5, 0.0, 1.5], (2, 1)),
            "alpha": alpha, "falpha": np.tile([0.2, 0.9, 0.9, 0.2], (2, 1)), "width": np.array([0.5, 0.5])}
    fig = plot_multifractal_spectrum({"rest": spec})
    assert "width 0.50" in fig.axes[1].get_legend().get_texts()[0].get_text()


def test_mf_spectrum_width_skips_a_nan_series():
    alpha = np.array([[1.0, 0.8, 0.6, 0.4], [np.nan] * 4])
    spec = {"tau": np.zeros((2, 4)), "alpha": alpha, "falpha": np.tile([0.2, 0.9, 0.9, 0.2], (2, 1))}
    fig = plot_multifractal_spectrum(spec)
    assert "width 0.60" in fig.axes[1].get_legend().get_texts()[0].get_text()


def test_fingerprint_network_note_of_many_subjects_stays_inside_the_figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    labels = [f"sub-{i:02d}" for i in range(6)]
    fig = plot_fingerprint({k: _table(["Fz", "Cz"]) for k in labels},
                           {k: {"fc_density": 0.75, "graph_fd": 2.25} for k in labels}, title="rest")
    FigureCanvasAgg(fig).draw()
    box = fig._suptitle.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width  # one 200-character line was cut at both ends
    for k in labels:  # nothing lost by the wrapping
        assert f"{k}: fc_density 0.75, graph_fd 2.25" in fig.get_suptitle()


def test_fingerprint_figure_marks_channels_without_a_value():
    # A flat (or NaN-holding) channel has value NaN: it was drawn nowhere, an empty slot that reads like
    # a plotting gap. It is now marked at the bottom of each panel and counted in the panel title.
    fig = plot_fingerprint(_table(["Fz", "Cz", "Pz"], nan_channels=("Cz",)))
    ax = fig.axes[0]
    marks = [ln for ln in ax.get_lines() if ln.get_marker() == "x"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [1.0]
    assert "1 not measured" in ax.get_title()


def test_fingerprint_figure_without_nan_draws_no_mark():
    fig = plot_fingerprint(_table(["Fz", "Cz"]))
    assert not [ln for ln in fig.axes[0].get_lines() if ln.get_marker() == "x"]
    assert fig.axes[0].get_title() == "Higuchi FD"


@pytest.mark.parametrize("key, value", [
    ("window", 11.5),   # was bent to 11 silently (int())
    ("window", 10),     # even: error named "window", not the config path
    ("tolerance", 0),
    ("min_ms", 2500.0),  # above max_ms
])
def test_interval_filter_settings_are_checked_with_their_config_path(key, value):
    with pytest.raises(ValueError, match=rf"config\.intervals\.{key}"):
        resolve_config({"intervals": {"ectopic_filter": True, key: value}})


def test_interval_filter_window_accepts_a_whole_float():
    assert resolve_config({"intervals": {"window": 11.0}})["intervals"]["window"] == 11


def test_rr_in_seconds_with_the_ectopic_filter_says_why_nothing_is_left():
    # The filter keeps 300-2000 ms: RR intervals given in seconds lose every beat, and each measure read
    # "too_short" for a 300-beat series, which points at the recording, not at the units.
    from fractals.fingerprint import fingerprint

    rr_s = 0.8 + 0.05 * np.sin(np.arange(300) / 7.0)
    cfg = {"intervals": {"ectopic_filter": True}, "measures": ["dfa_alpha1", "higuchi_fd"]}
    table, summary = fingerprint(rr_s, None, cfg, kind="intervals")
    assert table["flag"].str.startswith("too_short").all() and summary["n_flagged"] == 1
    assert table["flag"].str.contains("kept 0 of 300 beats").all()
    assert table["flag"].str.contains("in ms").all()
    ms, _ = fingerprint(rr_s * 1000, None, cfg, kind="intervals")
    assert ms["ok"].all()


def test_fingerprint_of_twelve_subjects_gives_each_its_own_colour_and_a_legend_inside_the_figure():
    # "C10" is "C0" again: sub-10 was drawn in sub-00's colour. The 12-entry legend inside the first
    # panel ran up over the title.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_hex

    labels = [f"sub-{i:02d}" for i in range(12)]
    fig = plot_fingerprint({k: _table(["Fz", "Cz", "Pz"], 1.0 + i / 10) for i, k in enumerate(labels)}, title="x")
    lines = [ln for ln in fig.axes[0].get_lines() if not ln.get_label().startswith("_")]
    assert len({to_hex(ln.get_color()) for ln in lines}) == 12
    FigureCanvasAgg(fig).draw()
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1
    box, title = legends[0].get_window_extent(), fig._suptitle.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y0 >= 0 and box.y1 <= fig.bbox.height
    assert not box.overlaps(title)
    assert sorted(t.get_text() for t in legends[0].get_texts()) == labels
