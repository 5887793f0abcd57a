"""Known contrasts on real recordings (../shared/data; skipped with a reason when absent).

Measured on this data (see docs/methods_fractals.md):
- eegmat-dev, Higuchi FD (k_max 8, mean over 19 channels, after cutting the ~2 s flat padding that
  ends each rest file): arithmetic > rest in 10 of 12 subjects, mean difference 0.037, Wilcoxon
  signed-rank p = 0.005 (paired t p = 0.010).
- hrv_rr_dev, DFA alpha1 (4-16 beats) after ectopic filtering: NSR 1.25 +- 0.17 (n=20), CHF
  0.76 +- 0.26 (n=10), AUC 0.91.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.realdata



def _trim_flat_tail(x: np.ndarray, min_run: int = 25) -> np.ndarray:
    """Cut at the first stretch of >= min_run samples where no channel changes.

    The eegmat-dev rest files end in about 2 s of padding (two flat levels joined by one jump);
    left in, it is flagged flat_segment by the fingerprint and biases every measure.
    """
    still = np.all(np.diff(x, axis=1) == 0, axis=0).astype(np.int64)
    csum = np.cumsum(still)
    run = csum - np.maximum.accumulate(np.where(still == 0, csum, 0))  # length of the current still run
    hits = np.nonzero(run >= min_run)[0]
    return x if hits.size == 0 else x[:, : hits[0] - min_run + 1]


def test_eeg_higuchi_fd_higher_during_arithmetic(shared_data):
    mne = pytest.importorskip("mne", reason="reading EDF needs mne")
    from scipy.stats import wilcoxon

    from fractals.fingerprint import fingerprint

    root = shared_data / "eegmat-dev"
    subjects = sorted(p.name for p in root.glob("sub-*"))
    if len(subjects) < 6:
        pytest.skip(f"eegmat-dev at {root} holds {len(subjects)} subjects; the paired test needs >= 6")
    hfd = {}
    for sub in subjects:
        for task in ("rest", "arithmetic"):
            raw = mne.io.read_raw_edf(root / sub / "eeg" / f"{sub}_task-{task}_eeg.edf", preload=True, verbose="ERROR")
            x = _trim_flat_tail(raw.get_data())
            table, summary = fingerprint(x, raw.info["sfreq"], {"measures": ["higuchi_fd"]},
                                         channel_names=raw.ch_names)
            assert summary["n_flagged"] == 0, f"{sub} {task}: {table[~table.ok].head()}"
            hfd[sub, task] = summary["higuchi_fd_mean"]
    diff = np.array([hfd[s, "arithmetic"] - hfd[s, "rest"] for s in subjects])
    n_higher = int((diff > 0).sum())
    p = float(wilcoxon(diff).pvalue)
    print(f"HFD arithmetic > rest in {n_higher}/{len(subjects)} subjects, mean diff {diff.mean():.3f}, Wilcoxon p={p:.4f}")
    assert n_higher > len(subjects) / 2
    assert p < 0.05


def test_hrv_dfa_alpha1_separates_healthy_from_heart_failure(shared_data):
    from fractals.fingerprint import fingerprint

    data = np.load(shared_data / "hrv_rr_dev.npz", allow_pickle=False)
    rr, offsets, group = data["rr_ms"], data["offsets"], data["group"]
    cfg = {"intervals": {"ectopic_filter": True}, "measures": ["dfa_alpha1"]}
    alpha1 = np.array([
        fingerprint(rr[offsets[k]:offsets[k + 1]].astype(np.float64), None, cfg, kind="intervals")[1]["dfa_alpha1_mean"]
        for k in range(len(group))
    ])
    healthy, chf = alpha1[group == "NSR"], alpha1[group == "CHF"]
    auc = float((healthy[:, None] > chf[None, :]).mean() + 0.5 * (healthy[:, None] == chf[None, :]).mean())
    print(f"alpha1 NSR {healthy.mean():.2f} +- {healthy.std():.2f} (n={healthy.size}), "
          f"CHF {chf.mean():.2f} +- {chf.std():.2f} (n={chf.size}), AUC {auc:.2f}")
    assert healthy.mean() > 1.1 and healthy.mean() < 1.4  # Peng et al. 1995: about 1.2-1.3
    assert chf.mean() < 1.0
    assert auc >= 0.85  # measured 0.91
