"""Byte tokenizer: the 256 byte values plus three specials, so any file is valid input."""
from __future__ import annotations

PAD, BOS, EOS = 256, 257, 258
VOCAB_SIZE = 259


def encode(data: bytes | str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    """Bytes (or UTF-8 text) to token ids in ``[0, 259)``."""
    # surrogateescape: command-line text that is not UTF-8 reaches Python as lone surrogates
    # (os.fsdecode); this gives back the exact bytes instead of raising.
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
    return ([BOS] if add_bos else []) + list(raw) + ([EOS] if add_eos else [])


def decode(ids) -> bytes:
    """Token ids back to bytes; specials are dropped."""
    return bytes(int(i) for i in ids if 0 <= int(i) < 256)
