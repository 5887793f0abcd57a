"""`fmx infer`: generate bytes from a byte-model checkpoint (model=fractal_byte)."""
from __future__ import annotations

import sys
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("infer")
    def infer(
        checkpoint: Path = typer.Argument(..., help="Lightning checkpoint (.ckpt) of a fractal_byte trial"),
        prompt: str = typer.Option("", "--prompt", "-p", help="text to continue (UTF-8)"),
        max_bytes: int = typer.Option(200, "--max-bytes", "-n", min=0, help="bytes to generate"),
        temperature: float = typer.Option(0.8, min=0.0, help="0 for greedy decoding"),
        top_k: int = typer.Option(40, min=0, help="sample among the k most likely bytes"),
        seed: int = typer.Option(0, help="sampling seed"),
        stop: bool = typer.Option(True, "--stop/--no-stop",
                                  help="end at the model's end-of-file token (EOS) before --max-bytes"),
    ) -> None:
        """Continue the prompt with the byte model in CHECKPOINT and print the bytes (up to --max-bytes, or to EOS)."""
        if checkpoint.is_dir() and (checkpoint / "model.ckpt").is_file():  # the folder a trial's fmx.checkpoint names
            raise typer.BadParameter(f"{checkpoint} is a checkpoint folder; pass the file in it: "
                                     f"{checkpoint / 'model.ckpt'}")
        if not checkpoint.is_file():
            raise typer.BadParameter(f"{checkpoint} is not a file; pass a .ckpt written by a fractal_byte trial")
        import torch

        from models.byte.lightning import load_for_inference
        from models.byte.model import generate
        from models.byte.tokenizer import EOS, decode, encode
        try:
            model = load_for_inference(str(checkpoint))
        except Exception as err:  # unpickling/loading fails in many ways; all mean "wrong file"
            raise typer.BadParameter(
                f"{checkpoint} is not a fractal_byte checkpoint ({type(err).__name__}: {err}); "
                f"pass a .ckpt written by a model=fractal_byte trial"
            ) from None
        # Training joins files with EOS, so EOS (never BOS, absent from the data) is what precedes a document start.
        ids = encode(prompt) if prompt else [EOS]
        try:
            out = generate(model, ids, max_new=max_bytes, temperature=temperature, top_k=top_k,
                           generator=torch.Generator().manual_seed(seed), stop_at_eos=stop)
        except ValueError as err:  # a bad option value (e.g. --temperature inf): say so, no traceback
            raise typer.BadParameter(str(err)) from None
        sys.stdout.buffer.write(decode(out) + b"\n")
