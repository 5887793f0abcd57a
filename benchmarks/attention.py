"""Time and memory of the fractal attention patterns against torch SDPA, by sequence length.

    python benchmarks/attention.py --device cpu  --lengths 256 1024 4096
    python benchmarks/attention.py --device cuda --lengths 256 1024 4096 16384 --dtype bf16

Forward plus backward of one self-attention kernel call on (batch, heads, n, head_dim) inputs.
Peak memory is measured on CUDA (torch.cuda.max_memory_allocated); on CPU only time is reported.
Configurations whose dense score matrix would exceed --max-dense-gb are skipped and marked.
Prints a markdown table (paste into docs/attention.md).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.attention import build_pattern  # noqa: E402

PATTERNS = ["sdpa", "hilbert", "cantor", "dragon", "julia", "fractal_blend"]
DENSE = {"dragon", "julia", "fractal_blend"}


def _kernel(name: str, heads: int):
    if name == "sdpa":
        return lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return build_pattern(name, n_heads=heads)


def _time(fn, device: str, repeats: int) -> float:
    # "cuda:1" too: comparing to "cuda" skipped the syncs there and timed only the kernel launches.
    on_cuda = torch.device(device).type == "cuda"
    times = []
    for i in range(repeats + 1):
        if on_cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if on_cuda:
            torch.cuda.synchronize(device)
        if i:  # first call warms caches (index tables, kernels)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-dense-gb", type=float, default=4.0, help="skip dense patterns whose fp32 scores exceed this")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats: needs >= 1, got {args.repeats}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda: torch.cuda.is_available() is False on this machine")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    dev = args.device
    on_cuda = torch.device(dev).type == "cuda"
    name = torch.cuda.get_device_name(dev) if on_cuda else platform.processor() or platform.machine()
    print(f"device={dev} ({name}) torch={torch.__version__} batch={args.batch} heads={args.heads} "
          f"head_dim={args.head_dim} dtype={args.dtype}; fwd+bwd, median of {args.repeats}\n")
    print("| n | " + " | ".join(PATTERNS) + " |")
    print("|---|" + "---|" * len(PATTERNS))
    for n in args.lengths:
        cells = []
        for pat in PATTERNS:
            # dense patterns hold scores, weights and their grads in fp32: ~4 copies of B*H*n*n floats
            dense_gb = 4 * args.batch * args.heads * n * n * 4 / 1e9
            if (pat in DENSE or (pat == "sdpa" and not on_cuda)) and dense_gb > args.max_dense_gb:
                cells.append("skipped (memory)")
                continue
            g = torch.Generator(device="cpu").manual_seed(0)
            q, k, v = [torch.randn(args.batch, args.heads, n, args.head_dim, generator=g).to(dev, dtype).requires_grad_(True)
                       for _ in range(3)]
            kern = _kernel(pat, args.heads)
            if isinstance(kern, torch.nn.Module):
                kern = kern.to(dev)

            def step():
                out = kern(q, k, v)
                out.float().pow(2).mean().backward()

            if on_cuda:
                torch.cuda.reset_peak_memory_stats(dev)
            try:
                t = _time(step, dev, args.repeats)
            except (RuntimeError, MemoryError) as exc:  # out of memory: report, don't crash the table
                cells.append(f"failed ({type(exc).__name__})")
                continue
            cell = f"{t * 1e3:.1f} ms"
            if on_cuda:
                cell += f", {torch.cuda.max_memory_allocated(dev) / 2**20:.0f} MiB"
            cells.append(cell)
        print(f"| {n} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
