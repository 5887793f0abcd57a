"""Cohort comparisons of fingerprint results: conditions within subjects, or participant groups.

``compare(OUT, contrast="condition=rest,arithmetic")`` tests every (measure, channel) of the tidy
table, plus the channel mean of each measure (channel ``mean``), between the two levels:

- within-subject contrasts (at least 3 subjects have both levels; subjects with one level only are
  left out of the pairs) are paired: Wilcoxon signed-rank and paired t-test, Cohen's d_z,
  matched-pairs rank-biserial;
- between-subject contrasts (``group_by="group"`` from participants.tsv, or a column whose
  levels never share a subject) are unpaired: Mann-Whitney U and Welch's t, Cohen's d, rank-biserial.

The primary p-value (``p``; ``test="rank"`` for Wilcoxon/Mann-Whitney or ``"t"``) is corrected
with Benjamini-Hochberg (``q_fdr``) and Holm (``q_holm``) within each family: by default each
measure's channels form one family and the channel means and network values across measures another.
With ``mixed=True`` a linear mixed model ``value ~ level + (1 | subject)`` (statsmodels ``mixedlm``) is
fitted to each measure's channel means. Tables and figures go to ``OUT/compare/<name>/``.
"""
from __future__ import annotations

import dataclasses
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fmx.fingerprint import storage
from fmx.fingerprint.job import read_parquet, write_parquet
from fmx.fingerprint.stats import p_adjust, paired_stats, unpaired_stats

__all__ = ["CompareResult", "compare", "parse_contrast", "contrast_stats", "mixed_effects"]

MEAN_CHANNEL = "mean"
_PAIRED_COLUMNS = ("n", "mean_a", "mean_b", "diff", "t", "p_ttest", "cohens_d", "w", "p_wilcoxon", "rank_biserial")
_UNPAIRED_COLUMNS = ("n_a", "n_b", "mean_a", "mean_b", "diff", "t", "p_welch", "u", "p_mannwhitney", "cohens_d",
                     "rank_biserial")


@dataclasses.dataclass
class CompareResult:
    name: str
    out: str              # OUT/compare/<name>
    stats: Any            # one row per measure x channel (and channel "mean")
    mixed: Any | None     # one row per measure, or None
    paired: bool
    figures: list[str]


def parse_contrast(spec: str) -> tuple[str, list[str]]:
    """``"condition=rest,arithmetic"`` -> ``("condition", ["rest", "arithmetic"])``."""
    if "=" not in spec:
        raise ValueError(f"contrast: {spec!r} needs the form COLUMN=LEVEL_A,LEVEL_B (e.g. condition=rest,arithmetic)")
    column, levels = spec.split("=", 1)
    parts = [lv.strip() for lv in levels.split(",") if lv.strip()]
    if not column.strip() or len(parts) != 2 or parts[0] == parts[1]:
        raise ValueError(
            f"contrast: {spec!r} needs one column and two different levels, e.g. condition=rest,arithmetic")
    return column.strip(), parts


def _with_participants(table, out: str):
    participants_uri = storage.join(out, "participants.parquet")
    if storage.exists(participants_uri):
        participants = read_parquet(participants_uri)
        return table.merge(participants, on="subject", how="left")
    return table


def _channel_means(table, *, include_network: bool = False):
    """Per-channel measures averaged over channels (channel ``mean``); network rows kept when asked."""
    import pandas as pd

    is_net = table["channel"].str.lower() == "network"
    keys = [c for c in table.columns if c not in ("channel", "value")]
    channels = table[~is_net]
    # The job drops NaN values (a flat channel in one recording): average only the channels a subject has in
    # every one of its recordings, so its means compare like with like across levels and sessions.
    recording = channels.groupby(keys, dropna=False, sort=False).ngroup()
    by_subject = [channels["subject"], channels["measure"]]
    n_recordings = recording.groupby(by_subject).transform("nunique")
    n_with_channel = recording.groupby(by_subject + [channels["channel"]]).transform("nunique")
    channels = channels[n_with_channel == n_recordings]
    means = channels.groupby(keys, dropna=False)["value"].mean().reset_index()
    means["channel"] = MEAN_CHANNEL
    return pd.concat([means, table[is_net]], ignore_index=True) if include_network else means


def contrast_stats(table, column: str, levels: Sequence[str], *, paired: bool | None = None,
                   test: str = "rank", family: str = "measure"):
    """Per (measure, channel) statistics for ``column`` level ``levels[1]`` versus ``levels[0]``.

    ``table`` is tidy (``subject``, ``channel``, ``measure``, ``value`` plus ``column``). Returns a
    frame sorted by measure and channel, and whether the tests were paired.
    """
    import pandas as pd

    if test not in ("rank", "t"):
        raise ValueError(f"test: must be 'rank' (Wilcoxon/Mann-Whitney) or 't' (t-tests), got {test!r}")
    if family not in ("measure", "all"):
        raise ValueError(f"family: must be 'measure' or 'all', got {family!r}")
    if column not in table.columns:
        raise ValueError(f"contrast: column {column!r} not in the results; available: {sorted(table.columns)}")
    a_level, b_level = (str(v) for v in levels)
    labels = table[column].astype(str)
    found = sorted(labels.unique())
    for level in (a_level, b_level):
        if level not in found:
            raise ValueError(f"contrast: {column}={level!r} not in the results; levels found: {found}")
    data = table[labels.isin([a_level, b_level])].assign(_level=labels)
    data = pd.concat([data, _channel_means(data)], ignore_index=True)
    subjects_a = set(data.loc[data["_level"] == a_level, "subject"])
    subjects_b = set(data.loc[data["_level"] == b_level, "subject"])
    if paired is None:
        # Shared subjects make the samples dependent: test them paired (subjects missing a level, e.g. after
        # a failed recording, drop out of the pairs and `n` counts the pairs) rather than unpaired.
        paired = len(subjects_a & subjects_b) >= 3
    elif paired and len(subjects_a & subjects_b) < 3:
        raise ValueError(f"paired: only {len(subjects_a & subjects_b)} subjects have both levels {a_level!r} and "
                         f"{b_level!r}; a paired test needs >= 3: leave the choice automatic or use --unpaired")
    rows = []
    for (measure, channel), part in data.groupby(["measure", "channel"], sort=True):
        # Average repeats (e.g. sessions) so each subject contributes one value per level.
        # A measure can be missing in one level (e.g. a network measure undefined there): reindex, let the
        # test report too few values in `note` instead of failing the whole contrast.
        per = part.groupby(["subject", "_level"])["value"].mean().unstack("_level").reindex(columns=[a_level, b_level])
        row = {"measure": measure, "channel": channel, "contrast": f"{column}: {b_level} vs {a_level}"}
        try:
            if paired:
                both = per.dropna()
                res = paired_stats(both[a_level], both[b_level])
                res["p"] = res["p_wilcoxon"] if test == "rank" else res["p_ttest"]
            else:
                res = unpaired_stats(per[a_level].dropna(), per[b_level].dropna())
                res["p"] = res["p_mannwhitney"] if test == "rank" else res["p_welch"]
            row.update(res)
        except ValueError as exc:
            # Counts and means are known even when no test can run (a group of one subject): keep them.
            a_vals, b_vals = (per.dropna() if paired else per)[[a_level, b_level]].T.to_numpy()
            a_vals, b_vals = a_vals[np.isfinite(a_vals)], b_vals[np.isfinite(b_vals)]
            counts = {"n": len(a_vals)} if paired else {"n_a": len(a_vals), "n_b": len(b_vals)}
            mean_a = float(a_vals.mean()) if len(a_vals) else np.nan
            mean_b = float(b_vals.mean()) if len(b_vals) else np.nan
            row.update(counts, mean_a=mean_a, mean_b=mean_b, diff=mean_b - mean_a, p=np.nan, note=str(exc))
        rows.append(row)
    stats = pd.DataFrame(rows)
    # every column even when no test could run (too few subjects): figures and the CLI read them (was a KeyError)
    for name in _PAIRED_COLUMNS if paired else _UNPAIRED_COLUMNS:
        if name not in stats.columns:
            stats[name] = np.nan
    # Montage order (first appearance in the table), channel means and network last: plots read naturally.
    order = {c: i for i, c in enumerate(dict.fromkeys(table["channel"]))}
    order[MEAN_CHANNEL] = len(order) + 1
    stats = stats.sort_values(["measure", "channel"], key=lambda col: col.map(order) if col.name == "channel" else col,
                              kind="stable").reset_index(drop=True)
    if "note" not in stats.columns:
        stats["note"] = ""
    stats["note"] = stats["note"].fillna("")
    stats["q_fdr"] = np.nan
    stats["q_holm"] = np.nan
    if family == "all":
        groups = [stats.index]
    else:
        # channel means and whole-montage (network) values: the summary-level tests, corrected together
        is_mean = stats["channel"].isin([MEAN_CHANNEL, "network"])
        groups = [idx for _, idx in stats[~is_mean].groupby("measure").groups.items()] + [stats[is_mean].index]
    for idx in groups:
        sub = stats.loc[idx, "p"]
        ok = sub.notna()
        if ok.any():
            stats.loc[sub[ok].index, "q_fdr"] = p_adjust(sub[ok].to_numpy(), "fdr_bh")
            stats.loc[sub[ok].index, "q_holm"] = p_adjust(sub[ok].to_numpy(), "holm")
    return stats, bool(paired)


def mixed_effects(table, column: str, levels: Sequence[str]):
    """``value ~ level + (1 | subject)`` per measure on channel means and network measures (``mixedlm``).

    Returns one row per measure: ``coef`` (effect of ``levels[1]`` versus ``levels[0]``), ``se``,
    ``z``, ``p``, ``n_obs``, ``n_subjects``, ``converged``.
    """
    import pandas as pd
    import statsmodels.formula.api as smf
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    a_level, b_level = (str(v) for v in levels)
    labels = table[column].astype(str)
    data = _channel_means(table[labels.isin([a_level, b_level])].assign(_level=labels), include_network=True)
    rows = []
    for measure, part in data.groupby("measure", sort=True):
        part = part.groupby(["subject", "_level"], as_index=False)["value"].mean()
        part["b"] = (part["_level"] == b_level).astype(float)
        row = {"measure": measure, "n_obs": len(part), "n_subjects": part["subject"].nunique()}
        if part["subject"].duplicated().sum() < 2:
            row.update(coef=np.nan, se=np.nan, z=np.nan, p=np.nan, converged=False,
                       note="needs repeated measures per subject (a within-subject contrast)")
            rows.append(row)
            continue
        if part["value"].nunique() == 1:
            row.update(coef=0.0, se=np.nan, z=np.nan, p=np.nan, converged=False,
                       note="every value is equal: no variance to model")
            rows.append(row)
            continue
        # Scale to unit SD so the optimiser sees O(1) numbers whatever the measure's units.
        scale = part["value"].std()
        part["y"] = (part["value"] - part["value"].mean()) / scale
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            fit = smf.mixedlm("y ~ b", part, groups=part["subject"]).fit(reml=True)
        # statsmodels retries failed optimisers itself and sets `converged` from the last one; its warnings
        # also fire on converged fits (an optimiser retried, a subject variance of 0 on the boundary).
        converged = bool(getattr(fit, "converged", True))
        messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
        note = ("subject variance on the boundary (0): the fit ignores the pairing"
                if any("boundary" in m for m in messages) else "")
        row.update(coef=float(fit.params["b"] * scale), se=float(fit.bse["b"] * scale), z=float(fit.tvalues["b"]),
                   p=float(fit.pvalues["b"]), converged=converged, note=note)
        rows.append(row)
    return pd.DataFrame(rows)


def compare(
    out: str,
    *,
    contrast: str | None = None,
    group_by: str | None = None,
    levels: Sequence[str] | None = None,
    paired: bool | None = None,
    test: str = "rank",
    family: str = "measure",
    mixed: bool = False,
    alpha: float = 0.05,
    figures: bool = True,
    measures: Sequence[str] | None = None,
) -> CompareResult:
    """Run one contrast on a fingerprint job's output folder and write ``OUT/compare/<name>/``.

    Give either ``contrast`` (``COLUMN=A,B``) or ``group_by`` (a participants column; ``levels``
    picks two of its values, by default the two it has, sorted).
    """
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha: needs a threshold in (0, 1), got {alpha!r}; e.g. 0.05")
    if (contrast is None) == (group_by is None):
        raise ValueError(
            "contrast/group_by: give exactly one (e.g. --contrast condition=rest,arithmetic or --group-by group)")
    table = _with_participants(read_parquet(storage.join(out, "fingerprint.parquet")), out)
    if table.empty:
        raise ValueError(f"{out}: the fingerprint table is empty (every recording failed?); see failures.parquet")
    if measures:
        measures = [measures] if isinstance(measures, str) else list(measures)  # "higuchi_fd" was a TypeError
        available = sorted(table["measure"].unique())
        unknown = [m for m in measures if m not in available]
        if len(unknown) == len(measures):
            raise ValueError(f"measures: none of {measures} is in the results; available: {available}")
        if unknown:  # a misspelt name was dropped silently when another name matched
            raise ValueError(f"measures: {unknown} not in the results; available: {available}")
        table = table[table["measure"].isin(measures)]
    if contrast is not None:
        if levels:
            raise ValueError(f"levels: only with group_by; the contrast {contrast!r} names its levels itself "
                             "(COLUMN=A,B)")
        column, pair = parse_contrast(contrast)
    else:
        column = group_by
        if column not in table.columns:
            raise ValueError(f"group_by: {column!r} is not a participants column; available: {sorted(table.columns)}")
        found = sorted(table[column].dropna().astype(str).unique())
        if isinstance(levels, str):  # levels="NSR,CHF", as the errors write it (was split into letters)
            levels = [lv.strip() for lv in levels.split(",")]
        pair = list(levels) if levels else found
        if len(pair) != 2 or pair[0] == pair[1]:
            raise ValueError(f"levels: {pair} for group_by {column!r} (levels {found}); pick two different levels "
                             "with levels=A,B")
        for level in pair:
            if str(level) not in found:
                raise ValueError(f"levels: {column}={level!r} not in the results; levels found: {found}")
        # A participants column gives each subject one level, so the automatic choice is unpaired; a column whose
        # levels share subjects (group_by="condition") must be tested paired, as the same contrast is.
    stats, was_paired = contrast_stats(table, column, pair, paired=paired, test=test, family=family)
    mixed_table = mixed_effects(table, column, pair) if mixed else None
    name = f"{column}-{pair[1]}-vs-{pair[0]}".replace("/", "_").replace(" ", "_")
    target = storage.join(out, "compare", name)
    write_parquet(stats, storage.join(target, "stats.parquet"))
    storage.write_bytes_atomic(storage.join(target, "stats.csv"), stats.to_csv(index=False).encode())
    if mixed_table is not None:
        write_parquet(mixed_table, storage.join(target, "mixed.parquet"))
        storage.write_bytes_atomic(storage.join(target, "mixed.csv"), mixed_table.to_csv(index=False).encode())
    written = _figures(stats, table, column, pair, target, alpha) if figures else []
    _remove_stale(target, kept={storage.join(target, "mixed.parquet"), storage.join(target, "mixed.csv")}
                  if mixed_table is not None else set(), figures=written)
    return CompareResult(name=name, out=target, stats=stats, mixed=mixed_table, paired=was_paired, figures=written)


def _remove_stale(target: str, *, kept: set[str], figures: list[str]) -> None:
    """Delete a previous run's mixed tables and figures this run did not rewrite.

    A rerun without ``mixed`` (or with other measures, or ``figures=False``) left the old ``mixed.csv`` and
    figures beside the new ``stats.csv``: tables and plots of different data in one folder.
    """
    stale_mixed = {storage.join(target, "mixed.parquet"), storage.join(target, "mixed.csv")} - kept
    figures_dir = storage.join(target, "figures")
    old = [uri for uri in storage.list_files(figures_dir) if uri.endswith(".png") and uri not in set(figures)]
    for uri in [*sorted(stale_mixed), *old]:
        if storage.is_s3(uri):
            if storage.exists(uri):
                storage.s3_filesystem().delete_file(storage._s3_path(uri))
        else:
            Path(uri).unlink(missing_ok=True)


def _figures(stats, table, column: str, pair: Sequence[str], target: str, alpha: float) -> list[str]:
    from fmx.fingerprint import plots

    effect = "cohens_d"
    written = []
    with tempfile.TemporaryDirectory(prefix="fmx-compare-") as tmp:
        jobs = []
        for measure in sorted(stats["measure"].unique()):
            per_channel = stats[(stats["measure"] == measure) & (stats["channel"] != MEAN_CHANNEL)]
            if len(per_channel) > 1:
                jobs.append((f"effects_{measure}.png", plots.plot_channel_effects(per_channel, measure, effect=effect,
                                                                                   alpha=alpha)))
                scalp = plots.plot_scalp_map(per_channel, measure, effect=effect, alpha=alpha)
                if scalp is not None:
                    jobs.append((f"scalp_{measure}.png", scalp))
        means = _channel_means(table[table[column].astype(str).isin(pair)], include_network=True)
        jobs.append(("cohort.png", plots.plot_cohort(means, by=column, levels=list(pair))))
        for filename, fig in jobs:
            safe = filename.replace("/", "_").replace("[", "(").replace("]", ")").replace("=", "-")
            local = Path(tmp, safe)
            plots.save(fig, local)
            uri = storage.join(target, "figures", safe)
            storage.write_bytes_atomic(uri, local.read_bytes())
            written.append(uri)
    return written

