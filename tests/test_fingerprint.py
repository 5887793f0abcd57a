"""fractals.fingerprint: tidy table, summary, quality flags, config handling, intervals."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pd = pytest.importorskip("pandas", reason="fingerprint tables need pandas")

from fractals.fingerprint import (  # noqa: E402
    CONTINUOUS_MEASURES,
    DEFAULT_CONFIG,
    INTERVAL_MEASURES,
    clean_rr_intervals,
    fingerprint,
    resolve_config,
)
from fractals.stimuli import fgn, one_over_f_noise  # noqa: E402



FS = 250.0
CFG = {"temporal": {"psd_freq_band": [2.0, 40.0]}}


def _recording(n_ch=6, n=4096, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = one_over_f_noise(n, 1.0, fs=FS, batch_shape=(n_ch,), generator=g)
    return s + s.roll(-1, dims=0)  # each channel shares a source with its neighbour: a ring FC graph


def test_table_layout_and_summary():
    x = _recording()
    names = [f"E{i}" for i in range(6)]
    table, summary = fingerprint(x, FS, CFG, channel_names=names)
    assert list(table.columns) == ["channel", "measure", "value", "ok", "flag", "r2"]
    assert len(table) == 6 * len(CONTINUOUS_MEASURES)
    assert set(table["measure"]) == set(CONTINUOUS_MEASURES) and set(table["channel"]) == set(names)
    assert bool(table["ok"].all()) and (table["flag"] == "").all()
    beta = table[table.measure == "spectral_beta"]
    assert beta["r2"].between(0.5, 1.0).all() and table.loc[table.measure != "spectral_beta", "r2"].isna().all()
    assert summary["spectral_beta_mean"] == pytest.approx(1.0, abs=0.2)
    hfd = table[table.measure == "higuchi_fd"]["value"]
    assert summary["higuchi_fd_mean"] == pytest.approx(float(hfd.mean()))
    assert summary["higuchi_fd_std"] == pytest.approx(float(hfd.std(ddof=0)))
    assert summary["n_channels"] == 6 and summary["n_flagged"] == 0
    assert summary["fc_density"] == pytest.approx(2 / 5)  # ring: 2 of 5 possible partners
    assert summary["graph_fd"] == pytest.approx(1.0, abs=0.3)


def test_measures_match_known_exponents():
    # fGn with H = 0.7: DFA alpha ~ H, R/S ~ H (compressed towards 0.5), beta = 2H - 1.
    x = fgn(8192, 0.7, batch_shape=(4,), generator=torch.Generator().manual_seed(1))
    table, summary = fingerprint(x, 1000.0, {"temporal": {"psd_freq_band": [2.0, 200.0], "dfa_orders": [16, 32, 64, 128, 256]}})
    assert summary["dfa_alpha_mean"] == pytest.approx(0.7, abs=0.06)
    assert summary["hurst_rs_mean"] == pytest.approx(0.7, abs=0.08)
    assert summary["spectral_beta_mean"] == pytest.approx(0.4, abs=0.15)
    assert summary["higuchi_fd_mean"] > 1.0 and summary["higuchi_fd_mean"] < 2.0


def test_flat_and_nonfinite_channels_are_flagged_not_fatal():
    x = _recording().clone()
    x[1] = 3.0                        # flat
    x[2, 100] = float("nan")          # nonfinite
    x[3, 1000:1400] = x[3, 1000]      # stuck for 400 samples: flat segment
    table, summary = fingerprint(x, FS, CFG)
    by_ch = table.groupby("channel")
    assert set(by_ch.get_group("ch1")["flag"]) == {"flat"} and by_ch.get_group("ch1")["value"].isna().all()
    assert set(by_ch.get_group("ch2")["flag"]) == {"nonfinite"} and by_ch.get_group("ch2")["value"].isna().all()
    seg = by_ch.get_group("ch3").set_index("measure")
    assert not seg["ok"].any()
    # R/S has constant windows there and returns -inf, and MFDFA's q <= 0 moments of a zero fluctuation
    # are infinite: both are reported as errors, never passed on.
    assert all(f in {"flat_segment", "error: non-finite result"} or f.startswith("error: q_vals: F_q(s) is zero")
               for f in seg["flag"])
    assert seg.loc["higuchi_fd", "flag"] == "flat_segment" and math.isfinite(seg.loc["higuchi_fd", "value"])
    assert by_ch.get_group("ch0")["ok"].all()
    assert summary["n_flagged"] == 3
    # Summaries use ok rows only; the network uses the measurable channels (4 of 6).
    ok_hfd = table[(table.measure == "higuchi_fd") & table.ok]["value"]
    assert summary["higuchi_fd_mean"] == pytest.approx(float(ok_hfd.mean()))
    assert math.isfinite(summary["fc_density"])


def test_fewer_than_three_good_channels_reports_why():
    x = _recording(n_ch=3)
    x[0] = 0.0
    _, summary = fingerprint(x, FS, CFG)
    assert math.isnan(summary["graph_fd"]) and "need >= 3" in summary["graph_flag"]


def test_batched_recordings_add_a_recording_column():
    x = torch.stack([_recording(seed=0), _recording(seed=1)])
    table, summary = fingerprint(x, FS, CFG, channel_names=list("abcdef"))
    assert list(table.columns)[0] == "recording" and set(table["recording"]) == {0, 1}
    single, _ = fingerprint(x[1], FS, CFG, channel_names=list("abcdef"))
    both = table[table.recording == 1].drop(columns="recording").reset_index(drop=True)
    assert np.allclose(both["value"], single["value"], atol=1e-6)
    assert summary["n_recordings"] == 2


def test_measure_subset_numpy_input_and_config_errors():
    x = _recording(n_ch=3).numpy()
    table, summary = fingerprint(x, FS, {**CFG, "measures": ["higuchi_fd", "katz_fd"]})
    assert set(table["measure"]) == {"higuchi_fd", "katz_fd"} and "dfa_alpha_mean" not in summary
    with pytest.raises(ValueError, match="psd_freq_band"):
        fingerprint(x, 100.0)  # the default 2-80 Hz band reaches above the 50 Hz Nyquist
    with pytest.raises(ValueError, match="unknown key"):
        fingerprint(x, FS, {"temporal": {"higuchi_kmx": 8}})
    with pytest.raises(ValueError, match="channel_names"):
        fingerprint(x, FS, CFG, channel_names=["a"])
    with pytest.raises(ValueError, match="kind"):
        fingerprint(x, FS, kind="spikes")


def test_numpy_scalar_sampling_rate_is_accepted():
    # A rate read from a NumPy header (np.int64, np.float32) was rejected as "needs a sampling rate > 0".
    x = _recording(n_ch=3, n=1024)
    cfg = {**CFG, "measures": ["spectral_beta"]}
    ref, _ = fingerprint(x, FS, cfg)
    for fs in (np.int64(250), np.float32(250.0)):
        table, _ = fingerprint(x, fs, cfg)
        assert np.allclose(table["value"], ref["value"])


def test_resolve_config_accepts_the_fractals_block():
    cfg = resolve_config({"metrics": {"window_size": 1024, "graph": {"corr_threshold": 0.5}}})
    assert cfg["graph"]["corr_threshold"] == 0.5
    assert cfg["temporal"] == DEFAULT_CONFIG["temporal"]


def test_clean_rr_intervals_drops_ectopics():
    rr = np.full(200, 800.0)
    rr[50] = 400.0   # premature beat, 50 % off the running mean
    rr[51] = 1200.0  # compensatory pause
    rr[120] = 2500.0  # artefact, out of range
    out = clean_rr_intervals(rr)
    assert out.size == 197 and np.all(out == 800.0)


def test_intervals_kind_measures_and_too_short():
    g = np.random.default_rng(0)
    long = 800 + np.cumsum(g.normal(0, 5, 3000)) * 0.1 + g.normal(0, 20, 3000)
    short = long[:100]
    x = np.full((2, 3000), np.nan)
    x[0], x[1, :100] = long, short  # NaN padding of the shorter row is dropped
    table, summary = fingerprint(x, None, kind="intervals", channel_names=["long", "short"])
    assert set(table["measure"]) == set(INTERVAL_MEASURES)
    assert "spectral_beta" not in set(table["measure"])  # no PSD slope over beats
    ok_long = table[table.channel == "long"]
    assert ok_long["ok"].all()
    assert table[(table.channel == "short") & (table.measure == "dfa_alpha2")]["flag"].item() == "too_short"
    assert "fc_density" not in summary
    gap = long.copy()
    gap[10] = np.nan
    table, _ = fingerprint(gap[None], None, kind="intervals")
    assert set(table["flag"]) == {"nonfinite"} and table["value"].isna().all()
    table, _ = fingerprint(gap[None], None, {"intervals": {"ectopic_filter": True}}, kind="intervals")
    assert table["ok"].all()  # the filter drops the bad beat


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fingerprint_of_a_cuda_tensor_matches_cpu():
    x = _recording()
    cpu, _ = fingerprint(x, FS, CFG)
    gpu, summary = fingerprint(x.cuda(), FS, CFG)
    assert np.allclose(cpu["value"], gpu["value"], rtol=1e-4, atol=1e-6, equal_nan=True)
    assert summary["n_flagged"] == 0


# ------------------------------------------------------------------ review round: config and input errors
def test_config_measures_must_be_a_non_empty_list_of_names():
    # A YAML `measures: higuchi_fd` was split into characters ("unknown ['_', 'c', ...]"); an empty
    # list returned a table with no columns at all.
    x = _recording(n_ch=3, n=1024)
    with pytest.raises(ValueError, match=r"config.measures: needs a list.*\['higuchi_fd'\]"):
        fingerprint(x, FS, {**CFG, "measures": "higuchi_fd"})
    with pytest.raises(ValueError, match="config.measures: is empty"):
        fingerprint(x, FS, {**CFG, "measures": []})


@pytest.mark.parametrize("path", [("temporal", "exclude_peaks"), ("intervals", "ectopic_filter")])
def test_boolean_switches_reject_strings(path):
    # bool("false") is True: a quoted "false" silently turned the switch on.
    block, key = path
    kind = "intervals" if block == "intervals" else "continuous"
    x = _recording(n_ch=3, n=1024) + (800.0 if kind == "intervals" else 0.0)
    with pytest.raises(ValueError, match=f"config.{block}.{key}: needs true or false"):
        fingerprint(x, FS, {**CFG, block: {key: "false"}}, kind=kind)


@pytest.mark.parametrize("block, key, value", [
    ("temporal", "psd_freq_band", 40),           # was TypeError: 'int' object is not subscriptable
    ("temporal", "psd_freq_band", [2, 40, 80]),  # the third number was silently ignored
    ("temporal", "dfa_orders", 64),              # was TypeError: 'int' object is not iterable
    ("multifractal", "q_vals", "-2,2"),
    ("graph", "box_eps", 3),
    ("quality", "min_r2", None),                 # was TypeError from float(None)
    ("temporal", "higuchi_kmax", "eight"),       # was "invalid literal for int()" without the field
])
def test_config_values_of_the_wrong_kind_name_the_field(block, key, value):
    x = _recording(n_ch=3, n=1024)
    with pytest.raises(ValueError, match=f"config.{block}.{key}: needs"):
        fingerprint(x, FS, {**CFG, block: {key: value}})


def test_config_accepts_numpy_values():
    x = _recording(n_ch=3, n=1024)
    cfg = {"temporal": {"psd_freq_band": np.array([2.0, 40.0]), "dfa_orders": np.array([4, 16, 64]),
                        "higuchi_kmax": torch.tensor(6), "exclude_peaks": np.bool_(True)},
           "multifractal": {"scales": torch.tensor([8, 16, 32])},
           "measures": ["higuchi_fd", "dfa_alpha", "spectral_beta"]}
    table, _ = fingerprint(x, FS, cfg)
    assert bool(table["ok"].all())


def test_interval_config_errors_name_the_field():
    rr = 800.0 + 50.0 * fgn(3000, 0.8, generator=torch.Generator().manual_seed(0)).numpy()
    with pytest.raises(ValueError, match=r"config.intervals.alpha1_beats: .*lo < hi"):
        fingerprint(rr, None, {"intervals": {"alpha1_beats": [16, 4]}}, kind="intervals")
    with pytest.raises(ValueError, match="config.multifractal.scales"):
        fingerprint(rr, None, {"multifractal": {"scales": []}}, kind="intervals")


@pytest.mark.parametrize("shape", [(3, 0), (0, 1000), (2, 0, 1000)])
def test_empty_input_is_a_value_error(shape):
    for kind, fs in (("continuous", FS), ("intervals", None)):
        with pytest.raises(ValueError, match="x: "):
            fingerprint(np.zeros(shape), fs, CFG if kind == "continuous" else None, kind=kind)


def test_clean_rr_intervals_rejects_arguments_that_lose_beats():
    rr = 800.0 + 20.0 * np.sin(np.arange(100.0))
    # (subjects, beats) was flattened into one series, joining subjects end to end.
    with pytest.raises(ValueError, match=r"rr: needs one series"):
        clean_rr_intervals(np.stack([rr, rr]))
    assert clean_rr_intervals(rr[None]).shape == (100,)
    with pytest.raises(ValueError, match="window"):
        clean_rr_intervals(rr, window=11.0)  # was an IndexError from float indices
    with pytest.raises(ValueError, match="min_ms, max_ms"):
        clean_rr_intervals(rr, min_ms=2000, max_ms=300)  # silently dropped every beat
    with pytest.raises(ValueError, match="tolerance"):
        clean_rr_intervals(rr, tolerance=-0.2)


def test_psd_band_starting_at_zero_is_a_config_error():
    # The fingerprint accepted lo = 0 and the 1/f fit then rejected every channel one by one
    # (a config error reported as a per-channel flag on all of them).
    x = _recording(n_ch=3, n=1024)
    with pytest.raises(ValueError, match=r"config.temporal.psd_freq_band: .*0 < lo"):
        fingerprint(x, FS, {"temporal": {"psd_freq_band": [0.0, 40.0]}, "measures": ["spectral_beta"]})


def test_a_measure_the_rows_length_rules_out_is_flagged_in_one_probe_not_row_by_row():
    # 64-sample latents: R/S needs T >= 128. Every row got the same error, one call per row (256 in a fingerprint).
    from fractals._fingerprint_measures import _run
    from fractals.metrics import hurst_rs

    calls = []

    def counted(rows):
        calls.append(rows.shape[0])
        return hurst_rs(rows)

    rows = torch.randn(6, 64)
    vals, flags, r2 = _run(counted, rows)
    assert calls == [6, 1] and np.isnan(vals).all() and r2 is None
    assert all(f.startswith("error: x: T=64 is too short for default R/S windows") for f in flags), flags

    table, _ = fingerprint(torch.randn(2, 3, 64), FS, {"temporal": {"psd_freq_band": [2.0, 40.0]}})
    hurst = table[table["measure"] == "hurst_rs"]
    assert len(hurst) == 6 and not hurst["ok"].any() and hurst["flag"].str.contains("T=64 is too short").all()


def test_a_row_its_values_rule_out_is_still_isolated_row_by_row():
    from fractals._fingerprint_measures import _run

    def refuse_large(rows):
        if bool((rows.abs() > 100).any()):
            raise ValueError("x: a value above 100")
        return rows.std(-1)

    rows = torch.randn(4, 64)
    rows[2, 5] = 1e3
    calls = []
    vals, flags, _ = _run(lambda r: calls.append(r.shape[0]) or refuse_large(r), rows)
    assert calls == [4, 1, 1, 1, 1, 1]  # the batch, the white-noise probe (accepted), then each row
    assert flags == ["", "", "error: x: a value above 100", ""] and np.isnan(vals[2]) and np.isfinite(vals[[0, 1, 3]]).all()

    one = []
    _, flags, _ = _run(lambda r: one.append(r.shape[0]) or refuse_large(r), rows[2:3])
    assert one == [1, 1] and flags == ["error: x: a value above 100"]  # a single row: no probe


@pytest.mark.parametrize("node_orders", [1, 4])
def test_network_measures_of_a_batch_equal_each_recording_measured_alone(node_orders, monkeypatch):
    # Recordings with every channel good share one batched FC and box covering; the summary must be the mean of
    # each recording's own measures (the per-recording path, as a one-recording fingerprint takes it).
    from fractals import metrics as fm
    from fractals._fingerprint_measures import _network
    from fractals.fingerprint import resolve_config

    gen = torch.Generator().manual_seed(7)
    z = torch.randn(6, 8, 512, generator=gen)
    weights = 0.6 + 0.6 * torch.rand(6, 8, 1, generator=gen)
    x = z + weights * z.roll(1, dims=1)  # 6 recordings x 8 channels, each correlated with its ring neighbours
    cfg = resolve_config({"graph": {"node_orders": node_orders}})
    rows = x.reshape(-1, 512)
    alone = [_network(x[r], np.ones(8, bool), 8, cfg) for r in range(6)]
    assert not any("graph_flag" in a for a in alone)
    covered = []
    real = fm.graph_fractal_dim
    monkeypatch.setattr(fm, "graph_fractal_dim", lambda adj, *a, **k: covered.append(adj.shape) or real(adj, *a, **k))
    batched = _network(rows, np.ones(48, bool), 8, cfg)
    assert covered == [(6, 8, 8)]  # one covering for the six recordings
    assert batched["fc_density"] == pytest.approx(np.mean([a["fc_density"] for a in alone]), abs=1e-12)
    assert batched["graph_fd"] == pytest.approx(np.mean([a["graph_fd"] for a in alone]), abs=1e-12)
    assert "graph_flag" not in batched

    # a recording with a flagged channel is measured alone, over its good channels
    good = np.ones(48, bool)
    good[8 + 3] = False
    covered.clear()
    mixed = _network(rows, good, 8, cfg)
    assert covered == [(5, 8, 8), (7, 7)]
    one = _network(x[1][[0, 1, 2, 4, 5, 6, 7]], np.ones(7, bool), 7, cfg)
    want = [a for i, a in enumerate(alone) if i != 1] + [one]
    assert mixed["fc_density"] == pytest.approx(np.mean([a["fc_density"] for a in want]), abs=1e-12)
    assert mixed["graph_fd"] == pytest.approx(np.mean([a["graph_fd"] for a in want]), abs=1e-12)


def test_network_batch_with_a_graph_the_covering_refuses_falls_back_to_each_recording():
    from fractals._fingerprint_measures import _network
    from fractals.fingerprint import resolve_config

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 6, 256, generator=gen)  # recording 0: independent channels, no edge at 0.5
    for _ in range(2):  # recordings 1, 2: each channel shares noise with its ring neighbours
        x[1:] += x[1:].roll(1, dims=1)
    cfg = resolve_config({"graph": {"corr_threshold": 0.5, "box_eps": [2, 3]}})
    alone = [_network(x[r], np.ones(6, bool), 6, cfg) for r in range(3)]
    assert "no edges" in alone[0]["graph_flag"] and "graph_flag" not in alone[1] and "graph_flag" not in alone[2]
    out = _network(x.reshape(-1, 256), np.ones(18, bool), 6, cfg)
    assert out["fc_density"] == pytest.approx(np.mean([a["fc_density"] for a in alone]), abs=1e-12)
    assert out["graph_fd"] == pytest.approx(np.mean([alone[1]["graph_fd"], alone[2]["graph_fd"]]), abs=1e-12)
    assert out["graph_flag"] == alone[0]["graph_flag"]
