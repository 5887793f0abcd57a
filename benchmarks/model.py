"""NeuroFMx model benchmarks: SSD throughput, step time with priors on/off, and the training acceptance.

Three measurements (``--only`` picks some):

``ssd``
    Tokens/s of one Mamba-2 block, forward + backward: portable chunked SSD (eager and
    ``torch.compile``) against the fused ``mamba_ssm`` kernels when they import. GPU target:
    ``--device cuda`` -> d_model 512, 16 x 4096 tokens, bf16 autocast.
``step``
    Training step time of a NeuroFMx preset (``small`` on GPU) with fractal priors on and off.
``acceptance``
    Design-doc acceptance (section 14): with ``lambda_spec = 0.05`` the latent beta converges into
    [0.8, 1.2] while the validation task loss stays within 1 % of the no-prior baseline, on the
    synthetic dataset. ``--seeds N`` (default 3) trains both arms from each of N seeds (one seed
    drives data, init and batch order, so each seed gives a paired ratio prior / baseline); the
    verdict uses the mean ratio and the mean prior-arm beta, and prints the per-seed ratios, their
    sd and standard error, and the baseline loss's own mean and sd. ``--prior-opt KEY=VALUE``
    overrides a ``fractals.priors`` key in the prior arm (e.g. ``ramp_steps=60``).

``--quick`` shrinks everything for a CPU run (d_model 128, 2 x 1024 tokens, tiny preset). Its
acceptance trains 1500 steps per arm (~3 min each on one thread, ~17 min for 3 seeds): at 300 steps the
tiny model is far from trained (behaviour R^2 ~ 0.15) and the comparison measures how much the prior
slows early training, not what it costs (docs/model.md, Training acceptance). Results print as JSON
lines; ``--out results.json`` also writes them (atomically, after every acceptance arm, and a rerun
with the same ``--out`` resumes).

GPU commands (run on a CUDA machine)::

    python benchmarks/model.py --device cuda                     # all three, full size
    python benchmarks/model.py --device cuda --only ssd --compile
    python benchmarks/model.py --device cpu --quick --threads 1  # what docs/benchmarks.md records
    python benchmarks/model.py --device cpu --quick --only acceptance --threads 1 --seeds 5
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.backbones import Mamba2, mamba_kernels_available  # noqa: E402

CONF = REPO / "platform" / "fmx" / "conf"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)  # the device timed: a bare synchronize() waits for cuda:0 only


def _time(fn, device: str, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeats


# ----------------------------------------------------------------------------- SSD throughput
def bench_ssd(args) -> list[dict]:
    d_model, batch, seqlen = (128, 2, 1024) if args.quick else (512, 16, 4096)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    rows = []
    paths = ["portable"] + (["fused"] if args.device.startswith("cuda") and mamba_kernels_available() else [])
    for path in paths:
        for compiled in ([False, True] if args.compile else [False]):
            if compiled and path == "fused":
                continue  # the fused path is already Triton kernels
            torch.manual_seed(0)
            block = Mamba2(d_model=d_model, d_state=64, headdim=64, kernels=path,
                           chunk_size=64 if args.device == "cpu" else 256).to(args.device)
            fwd = torch.compile(block) if compiled else block
            u = torch.randn(batch, seqlen, d_model, device=args.device, requires_grad=True)

            def step():
                with torch.autocast(device_type=args.device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32):
                    y = fwd(u)
                y.float().square().mean().backward()

            try:
                sec = _time(step, args.device, repeats=args.repeats)
            except Exception as exc:  # noqa: BLE001 - report, keep benchmarking the others
                rows.append({"bench": "ssd", "path": path, "compiled": compiled, "error": f"{type(exc).__name__}: {exc}"[:200]})
                continue
            rows.append({"bench": "ssd", "path": path, "compiled": compiled, "d_model": d_model,
                         "tokens": batch * seqlen, "dtype": str(dtype).replace("torch.", ""),
                         "ms_per_step": round(sec * 1e3, 2), "tokens_per_s": round(batch * seqlen / sec)})
    if args.device.startswith("cuda"):
        try:
            from models.backbones.mamba2 import _load_fused

            _load_fused()  # registers a source-only mamba_ssm without its failing __init__
            from mamba_ssm.modules.mamba2 import Mamba2 as RefMamba2
            from mamba_ssm.ops.triton import ssd_combined

            # The memory-efficient path fuses the conv via causal-conv1d's CUDA extension; without it,
            # mamba_ssm runs torch's conv1d and the same Triton SSD, which is the label then.
            mem_eff = getattr(ssd_combined, "causal_conv1d_fwd_function", None) is not None
            ref = RefMamba2(d_model=d_model, d_state=64, headdim=64, use_mem_eff_path=mem_eff).to(args.device)
            u = torch.randn(batch, seqlen, d_model, device=args.device, requires_grad=True)

            def ref_step():
                with torch.autocast(device_type="cuda", dtype=dtype):
                    y = ref(u)
                y.float().square().mean().backward()

            sec = _time(ref_step, args.device, repeats=args.repeats)
            rows.append({"bench": "ssd", "path": "mamba_ssm.Mamba2 (" + ("mem-eff" if mem_eff else "Triton SSD, torch conv1d") + ")",
                         "compiled": False, "d_model": d_model,
                         "tokens": batch * seqlen, "dtype": "bfloat16", "ms_per_step": round(sec * 1e3, 2),
                         "tokens_per_s": round(batch * seqlen / sec)})
        except Exception as exc:  # noqa: BLE001
            rows.append({"bench": "ssd", "path": "mamba_ssm.Mamba2", "error": f"{type(exc).__name__}: {exc}"[:200]})
    return rows


# ----------------------------------------------------------------------------- configs
def composed(preset: str, *, quick: bool, device: str) -> dict:
    root = yaml.safe_load((CONF / "config.yaml").read_text())
    root.pop("defaults")
    cfg = {**root,
           "model": yaml.safe_load((CONF / "model" / f"{preset}.yaml").read_text()),
           "data": yaml.safe_load((CONF / "data" / "synthetic.yaml").read_text()),
           "fractals": yaml.safe_load((CONF / "fractals" / "default.yaml").read_text()),
           "trainer": yaml.safe_load((CONF / "trainer" / "default.yaml").read_text())}
    if preset != "tiny":
        # The synthetic data carries spikes, lfp and behaviour: size the heads to it.
        n_units = cfg["data"]["n_units"] * cfg["data"]["n_subjects"]
        cfg["model"]["tokenizers"] = {"spikes": {"n_units": n_units, "layout": "channel_patch"},
                                      "lfp": {"n_channels": 16, "layout": "channel_patch"}}
        heads = cfg["model"]["heads"]
        heads["forecast"]["keys"] = heads["reconstruction"]["keys"] = ["spikes", "lfp"]
        heads["behavior"]["n_features"] = heads["contrastive"]["dim_b"] = cfg["data"]["n_behavior"]
        heads["adversarial"]["n_domains"] = cfg["data"]["n_subjects"]
    return cfg


def _batch(cfg: dict, device: str, n: int):
    from models.data.batch import collate_batch
    from models.data.synthetic import SyntheticConfig, SyntheticNeuralDataset

    known = {f for f in SyntheticConfig.__dataclass_fields__}
    gen = {k: v for k, v in cfg["data"].items() if k in known}
    gen["seed"] = cfg.get("seed", 0) if gen.get("seed") is None else gen["seed"]
    ds = SyntheticNeuralDataset(n_samples=n, config=gen)
    batch = collate_batch([ds[i] for i in range(n)])
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


# ----------------------------------------------------------------------------- step time
def bench_step(args) -> list[dict]:
    from models.lightning import NeuroFMxModule

    preset, batch_size = ("tiny", 8) if args.quick else ("small", 16)
    rows = []
    for priors_on in (False, True):
        cfg = composed(preset, quick=args.quick, device=args.device)
        cfg["data"]["n_time"] = 256 if args.quick else 1024
        cfg["fractals"]["enable"] = priors_on
        cfg["fractals"]["priors"]["warmup_steps"] = 0
        torch.manual_seed(0)
        module = NeuroFMxModule(cfg).to(args.device)
        batch = _batch(cfg, args.device, batch_size)
        opt = module.configure_optimizers()["optimizer"]  # what training uses (fused AdamW on CPU)
        dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32

        def step():
            with torch.autocast(device_type=args.device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32):
                out = module(batch)
                prior, _ = module._prior_loss(out, batch)
                loss = out["loss"] if prior is None else out["loss"] + prior
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        sec = _time(step, args.device, repeats=args.repeats)
        rows.append({"bench": "step", "preset": preset, "priors": priors_on, "batch": batch_size,
                     "n_time": cfg["data"]["n_time"], "ms_per_step": round(sec * 1e3, 1)})
    return rows


# ----------------------------------------------------------------------------- acceptance
def _val_stats(module, loader, device) -> tuple[float, float, float, dict]:
    """Validation task loss (unweighted sum of head losses), mean latent beta, the same mean by the
    prior's own estimator, and per-head losses.

    ``latent beta`` is the acceptance's measure, ``val/latent_beta`` (``latent_measures``: peak-masked
    fit, ``metrics.temporal.exclude_peaks``). The prior fits every bin (``priors.exclude_peaks`` off):
    on latents with low-frequency peaks the two differ, so both are reported.
    """
    from fractals.regularizers import latent_beta
    from models.callbacks import latent_measures

    module.eval()
    losses, betas, prior_betas, heads = [], [], [], {}
    band = module.fractals_cfg.get("metrics", {}).get("temporal", {}).get("psd_freq_band", (2.0, 80.0))
    with torch.no_grad():
        for batch in loader:
            batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            out = module(batch)
            losses.append(float(sum(out["losses"].values())))
            for name, v in out["losses"].items():
                heads.setdefault(name, []).append(float(v))
            latents, fs = out["latents"]["ssm"].float(), module.latent_rate(batch)
            m = latent_measures(latents, fs=fs, cfg_fractals=module.fractals_cfg)
            betas.append(float(m["beta"].mean()))
            prior_betas.append(float(latent_beta(latents, fs, band).mean()))
    module.train()
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return mean(losses), mean(betas), mean(prior_betas), {k: round(mean(v), 4) for k, v in heads.items()}


def _fit_arm(args, *, lam: float, seed: int, steps: int) -> dict:
    """Train one acceptance arm (``lambda_spec = lam``) from ``seed``; return its validation row."""
    import pytorch_lightning as pl

    from models.data.datamodule import build_datamodule
    from models.lightning import NeuroFMxModule

    preset = "tiny" if args.quick else "small"
    cfg = composed(preset, quick=args.quick, device=args.device)
    cfg["seed"] = seed  # one seed drives data, init and batch order (data.seed is null)
    cfg["data"].update(n_train=256 if args.quick else 4096, n_val=32 if args.quick else 256)
    cfg["trainer"]["batch_size"] = 16
    cfg["fractals"]["enable"] = lam > 0
    cfg["fractals"]["priors"].update(lambda_spec=lam, lambda_mf=0.0, lambda_graphfd=0.0,
                                     warmup_steps=steps // 5)
    for key, value in (args.prior_opts or {}).items():
        cfg["fractals"]["priors"][key] = value
    cfg["optim"] = dict(cfg["optim"], lr=1e-3 if args.quick else 3e-4)
    pl.seed_everything(seed, verbose=False)
    module = NeuroFMxModule(cfg)
    dm = build_datamodule(cfg)
    on_cuda = args.device.startswith("cuda")
    # devices=1 trained on cuda:0 whatever --device said; [index] trains where the other rows ran.
    trainer = pl.Trainer(max_steps=steps, accelerator="gpu" if on_cuda else "cpu",
                         devices=[torch.device(args.device).index or 0] if on_cuda else 1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                         precision="bf16-mixed" if on_cuda else "32-true")
    module.configure_callbacks = lambda: []  # time the training only
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    fit_s = time.perf_counter() - t0
    dm.setup("validate")
    val_loss, beta, prior_beta, heads = _val_stats(module.to(args.device), dm.val_dataloader(), args.device)
    return {"bench": "acceptance", "preset": preset, "seed": seed, "lambda_spec": lam, "steps": steps,
            "prior_opts": dict(args.prior_opts or {}) if lam > 0 else {},
            "val_task_loss": round(val_loss, 4), "latent_beta": round(beta, 3),
            "latent_beta_prior_estimator": round(prior_beta, 3), "heads": heads,
            "fit_s": round(fit_s, 1), "load_avg": os.getloadavg()[0]}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else float("nan")
    return mean, sd


def _prior_estimator_means(pairs: list[tuple[dict, dict]]) -> dict:
    """Mean beta of each arm by the prior's own estimator, where the rows carry it (diagnostic only)."""
    key = "latent_beta_prior_estimator"
    if not all(key in r for pair in pairs for r in pair):
        return {}
    return {"baseline_beta_prior_estimator_mean": round(_mean_sd([b[key] for b, _ in pairs])[0], 3),
            "prior_beta_prior_estimator_mean": round(_mean_sd([p[key] for _, p in pairs])[0], 3)}


def acceptance_verdict(pairs: list[tuple[dict, dict]]) -> dict:
    """Verdict over seeds from ``(baseline_row, prior_row)`` pairs trained from the same seed.

    The per-seed ratio ``prior / baseline`` pairs the arms (same data, init and batch order), so
    seed-to-seed spread in the loss level cancels; the verdict uses the mean ratio (target
    <= 1.01) and the mean prior-arm beta (target in [0.8, 1.2]). ``ratio_se`` is the standard error
    of the mean ratio: a margin to 1.01 smaller than about 2 ``ratio_se`` is not resolved.
    """
    if not pairs:
        raise ValueError("pairs: needs at least one (baseline, prior) pair")
    ratios = [p["val_task_loss"] / b["val_task_loss"] for b, p in pairs]
    r_mean, r_sd = _mean_sd(ratios)
    b_mean, b_sd = _mean_sd([b["val_task_loss"] for b, _ in pairs])
    beta_mean, beta_sd = _mean_sd([p["latent_beta"] for _, p in pairs])
    base_beta, _ = _mean_sd([b["latent_beta"] for b, _ in pairs])
    n = len(ratios)
    spread = lambda v, digits: round(v, digits) if n > 1 else None  # noqa: E731 - one seed: no sd (null, not NaN)
    return {"seeds": n,
            "task_loss_ratios": [round(r, 4) for r in ratios],
            "task_loss_ratio_mean": round(r_mean, 4),
            "task_loss_ratio_sd": spread(r_sd, 4),
            "task_loss_ratio_se": spread(r_sd / n ** 0.5, 4),
            "baseline_task_loss_mean": round(b_mean, 4), "baseline_task_loss_sd": spread(b_sd, 4),
            "baseline_beta_mean": round(base_beta, 3),
            "prior_beta_mean": round(beta_mean, 3), "prior_beta_sd": spread(beta_sd, 3),
            **_prior_estimator_means(pairs),
            "beta_in_0.8_1.2": 0.8 <= beta_mean <= 1.2,
            "task_loss_within_1pct": r_mean <= 1.01,
            "pass": 0.8 <= beta_mean <= 1.2 and r_mean <= 1.01}


def _write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically (temp file, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2)
    os.replace(tmp, path)


def _arm_key(row: dict) -> tuple:
    opts = json.dumps(row.get("prior_opts") or {}, sort_keys=True) if row["lambda_spec"] > 0 else ""
    return row["preset"], row["seed"], row["lambda_spec"], row["steps"], opts


def _finished_arms(path: Path | None) -> dict[tuple, dict]:
    """Acceptance arms already in ``--out`` (a resumed run reuses them instead of training again)."""
    if path is None or not path.exists():
        return {}
    try:
        rows = json.loads(path.read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--out: {path} is not a results file of this script ({exc}); move it or pass another path")
    return {_arm_key(r): r for r in rows if r.get("bench") == "acceptance" and "seed" in r}


def bench_acceptance(args) -> list[dict]:
    """Both arms from each seed; with ``--out`` every finished arm is saved at once, and a rerun with the
    same ``--out`` resumes (arms with the same preset, seed, lambda, steps and prior options are reused)."""
    steps = args.acceptance_steps or (1500 if args.quick else 3000)
    preset = "tiny" if args.quick else "small"
    done = _finished_arms(args.out)
    earlier = dict(done)  # arms of other runs in --out (other steps, seeds, options): the final write keeps them
    rows, pairs = [], []
    for seed in range(args.seed0, args.seed0 + args.seeds):
        pair = []
        for lam in (0.0, 0.05):
            key = _arm_key({"preset": preset, "seed": seed, "lambda_spec": lam, "steps": steps,
                            "prior_opts": args.prior_opts})
            row = done.get(key)
            earlier.pop(key, None)
            reused = row is not None
            if not reused:
                row = done[key] = _fit_arm(args, lam=lam, seed=seed, steps=steps)
                if args.out:
                    _write_json(args.out, {"device": args.device_name, "quick": args.quick, "partial": True,
                                           "rows": list(done.values())})
            pair.append(row)
            # progress: each arm takes minutes on CPU
            print(f"# acceptance seed {seed} lambda_spec {lam}: task loss {row['val_task_loss']}, beta "
                  f"{row['latent_beta']}, {row['fit_s']} s{' (reused from --out)' if reused else ''}",
                  file=sys.stderr, flush=True)
        rows += pair
        pairs.append(tuple(pair))
    v = acceptance_verdict(pairs)
    print(f"# acceptance, {preset}, {steps} steps, {v['seeds']} seeds: latent beta {v['prior_beta_mean']} "
          f"(baseline {v['baseline_beta_mean']}; target [0.8, 1.2]), task loss ratio {v['task_loss_ratio_mean']} "
          f"sd {v['task_loss_ratio_sd']} se {v['task_loss_ratio_se']} (target <= 1.01) -> "
          f"{'PASS' if v['pass'] else 'FAIL'}", file=sys.stderr, flush=True)
    rows.append({"bench": "acceptance", "steps": steps, "verdict": v})
    args.earlier_arms = list(earlier.values())
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="CPU-sized run (minutes)")
    parser.add_argument("--only", nargs="*", choices=("ssd", "step", "acceptance"), default=None)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the portable path")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--acceptance-steps", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=3, help="acceptance: seeds per arm (the verdict uses the mean)")
    parser.add_argument("--seed0", type=int, default=0, help="acceptance: first seed")
    parser.add_argument("--prior-opt", dest="prior_opts", action="append", default=None, metavar="KEY=VALUE",
                        help="acceptance: override a fractals.priors key in the prior arm's config")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds: needs >= 1, got {args.seeds}")
    if args.repeats < 1:
        parser.error(f"--repeats: needs >= 1, got {args.repeats}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False on this machine")
    opts = {}
    for item in args.prior_opts or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--prior-opt: needs KEY=VALUE (a fractals.priors key), got {item!r}")
        opts[key] = yaml.safe_load(value)
    args.prior_opts = opts
    if args.threads:
        torch.set_num_threads(args.threads)
    which = args.only or ["ssd", "step", "acceptance"]
    benches = {"ssd": bench_ssd, "step": bench_step, "acceptance": bench_acceptance}
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x{torch.get_num_threads()}"
    args.device_name = device_name
    print(f"# NeuroFMx model benchmarks on {device_name}, torch {torch.__version__}, quick={args.quick}")
    rows = []
    for name in which:
        t0 = time.perf_counter()
        got = benches[name](args)
        for r in got:
            print(json.dumps(r))
        print(f"# {name}: {time.perf_counter() - t0:.1f} s", flush=True)
        rows += got
        if args.out and name != which[-1]:  # a timeout in a later benchmark (one device call) keeps these rows
            _write_json(args.out, {"device": device_name, "quick": args.quick, "partial": True,
                                   "rows": rows + getattr(args, "earlier_arms", [])})
    if args.out:
        _write_json(args.out, {"device": device_name, "quick": args.quick,
                               "rows": rows + getattr(args, "earlier_arms", [])})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
