"""Fractals quickstart (design doc section 11), CPU, well under a minute.

1. Generate fBm-like 1/f^beta signals with beta in {0.5, 1.0, 1.5}.
2. Measure Higuchi FD, DFA alpha and the 1/f slope beta; plot their distributions.
3. Train a tiny forecasting model with and without the 1/f prior; compare latent beta drift and
   validation loss. The model is a small causal conv net defined here (not NeuroFMx from
   ``models/``) so the example depends on ``fractals`` only and runs in seconds.
4. Attention-FD coupling on dummy attention maps with one planted head.

    .venv/bin/python examples/fractals_quickstart.py --out quickstart_out
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from fractals import metrics as fm
from fractals.plotting import plot_attention_fd_coupling, plot_beta_time, plot_fd_hist, save_figure
from fractals.probes import attention_fd_coupling
from fractals.regularizers import FractalPriors, latent_beta
from fractals.stimuli import one_over_f_noise

FS = 250.0
BAND = (2.0, 60.0)


def measure_stimuli(out: Path, g: torch.Generator) -> None:
    signals = {b: one_over_f_noise(4096, b, fs=FS, batch_shape=(32,), generator=g) for b in (0.5, 1.0, 1.5)}
    print("beta*  HFD          DFA alpha    beta (fit)")
    hfd, alpha = {}, {}
    for b, x in signals.items():
        hfd[f"beta={b}"] = fm.higuchi_fd(x)
        alpha[f"beta={b}"] = fm.dfa_alpha(x)
        beta = fm.spectral_beta(x, FS, BAND, exclude_peaks=False)
        print(f"{b:4.1f}   {hfd[f'beta={b}'].mean():.3f}+-{hfd[f'beta={b}'].std():.3f}  "
              f"{alpha[f'beta={b}'].mean():.3f}+-{alpha[f'beta={b}'].std():.3f}  "
              f"{beta.mean():.3f}+-{beta.std():.3f}")
    save_figure(plot_fd_hist(hfd, measure="Higuchi FD"), out / "hfd_hist.png", dpi=120)
    save_figure(plot_fd_hist(alpha, measure=r"DFA $\alpha$ (H = alpha for noise)"), out / "dfa_hist.png", dpi=120)


class TinyForecaster(nn.Module):
    """Causal conv encoder -> latents (B, T, C) -> linear next-sample forecast."""

    def __init__(self, *, channels: int = 4, latent: int = 16, kernel: int = 9):
        super().__init__()
        self.pad = kernel - 1
        self.conv1 = nn.Conv1d(channels, latent, kernel)
        self.conv2 = nn.Conv1d(latent, latent, kernel)
        self.head = nn.Linear(latent, channels)

    def forward(self, x: torch.Tensor):  # x: (B, T, channels)
        h = x.transpose(1, 2)
        h = torch.tanh(self.conv1(nn.functional.pad(h, (self.pad, 0))))
        h = torch.tanh(self.conv2(nn.functional.pad(h, (self.pad, 0))))
        latents = h.transpose(1, 2)  # (B, T, C): time on axis 1, the layout the priors expect
        return self.head(latents), latents


def train(prior: FractalPriors | None, data: torch.Tensor, val: torch.Tensor, steps: int, seed: int):
    torch.manual_seed(seed)
    model = TinyForecaster()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    betas = []
    for step in range(steps):
        idx = torch.randint(0, data.shape[0], (16,))
        x = data[idx]
        pred, latents = model(x[:, :-1])
        loss = nn.functional.mse_loss(pred, x[:, 1:])
        if prior is not None:
            extra, _ = prior(latents, step)
            loss = loss + extra
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            with torch.no_grad():
                betas.append(float(latent_beta(model(val[:8, :-1])[1], FS, BAND).mean()))
    with torch.no_grad():
        pred, latents = model(val[:, :-1])
        val_loss = float(nn.functional.mse_loss(pred, val[:, 1:]))
    return val_loss, betas


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="quickstart_out", help="folder for the figures")
    parser.add_argument("--steps", type=int, default=150, help="training steps per model")
    parser.add_argument("--lambda-spec", type=float, default=0.05, help="weight of the 1/f prior (config default 0.05)")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps: needs >= 1, got {args.steps}")
    torch.set_num_threads(1)  # tiny tensors: threads cost more than they save
    out = Path(args.out)
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(0)

    print("== 1-2. stimuli and their measures")
    measure_stimuli(out, g)

    print("== 3. tiny model with and without the 1/f prior (target beta* = 1.0)")
    series = one_over_f_noise(513, 1.5, fs=FS, batch_shape=(256, 4), generator=g).float().transpose(1, 2)
    data, val = series[:192], series[192:]
    prior = FractalPriors(lambda_spec=args.lambda_spec, lambda_mf=0.0, lambda_graphfd=0.0, warmup_steps=20, fs=FS, band=BAND,
                          spectral_beta_target=1.0)
    base_loss, base_betas = train(None, data, val, args.steps, seed=1)
    prior_loss, prior_betas = train(prior, data, val, args.steps, seed=1)
    print(f"baseline:   val MSE {base_loss:.4f}, latent beta {base_betas[0]:.2f} -> {base_betas[-1]:.2f}")
    print(f"with prior: val MSE {prior_loss:.4f}, latent beta {prior_betas[0]:.2f} -> {prior_betas[-1]:.2f}")
    steps = torch.arange(len(base_betas)) * 10
    fig = plot_beta_time(torch.tensor([base_betas, prior_betas]), times=steps, target=1.0,
                         labels=["baseline", "1/f prior"], xlabel="step", title="latent beta during training")
    save_figure(fig, out / "latent_beta.png", dpi=120)

    print("== 4. attention-FD coupling on dummy attention maps")
    x = one_over_f_noise(4096, 1.0, fs=FS, batch_shape=(8,), generator=g)
    fd = fm.windowed_higuchi_fd(x, 256, 128).float()  # (8, K) one FD per key window
    z = (fd - fd.mean()) / fd.std()
    logits = torch.randn(8, 4, 16, fd.shape[-1], generator=g)
    logits[:, 2] += 2.0 * z[:, None, :]  # head 2 attends to rough windows
    coupling = attention_fd_coupling(logits.softmax(-1), fd, method="spearman")
    print("coupling per head (Spearman):", [round(float(c), 2) for c in coupling[0]])
    save_figure(plot_attention_fd_coupling(coupling, layer_names=["layer 0"], value_label="Spearman r"), out / "coupling.png", dpi=120)
    print(f"figures in {out.resolve()}; total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
