"""Review round 9 regressions for the seed models as a user meets them (issue 8): the byte model's
data split and the fractal attention patterns."""
import pytest
import torch

from models.attention import build_pattern
from models.byte.data import ByteDataModule


@pytest.mark.parametrize("text, n_empty, seq_len", [(b"hello world", 3, 64), (b"ab", 2, 64), (b"hello world" * 10, 300, 8)])
def test_byte_data_holds_out_a_real_byte_when_the_corpus_ends_in_empty_files(tmp_path, text, n_empty, seq_len):
    # The held-out tail was EOS separators only ("hello world" then three empty files): every val batch
    # weighed 0 real bytes and the epoch's val/bpb read NaN.
    (tmp_path / "a.txt").write_bytes(text)
    for i in range(n_empty):
        (tmp_path / f"b{i:03d}.txt").write_bytes(b"")
    dm = ByteDataModule(path=str(tmp_path), seq_len=seq_len, batch_size=4, windows_per_epoch=8)
    dm.setup()
    targets = torch.stack([dm.val_set[i][1] for i in range(len(dm.val_set))])
    assert bool((targets < 256).any())


@pytest.mark.parametrize("name", ["hilbert", "cantor", "dragon", "julia", "fractal_blend"])
def test_patterns_take_a_value_width_other_than_the_key_width_like_sdpa(name):
    # The sparse patterns viewed the gathered values with the query width E: a RuntimeError "shape ... is
    # invalid" for v of shape (B, H, Lk, Ev != E), which torch SDPA (whose signature they share) accepts.
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 2, 5, 4), torch.randn(2, 2, 5, 4), torch.randn(2, 2, 5, 3)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])[:, None, None, :]
    pattern = build_pattern(name, n_heads=2)
    out = pattern(q, k, v, mask=mask)
    assert out.shape == (2, 2, 5, 3)
    assert torch.allclose(out[1:, :, :3], pattern(q[1:, :, :3], k[1:, :, :3], v[1:, :, :3]), atol=1e-6)


def test_byte_corpus_cap_reads_only_the_capped_bytes(tmp_path):
    # max_bytes sliced the corpus after reading every file whole (and widening it to int16): a cap meant
    # to fit a large dump into memory still loaded all of it.
    import tracemalloc

    from models.byte.data import read_corpus

    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:  # sparse: 64 MB on disk costs nothing
        fh.truncate(64 * 2**20)
    (tmp_path / "small.txt").write_bytes(b"never read")
    tracemalloc.start()
    try:
        ids = read_corpus(tmp_path, max_bytes=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ids.shape == (1000,) and int(ids.max()) == 0
    assert peak < 8 * 2**20


@pytest.mark.parametrize("name", ["hilbert", "cantor", "dragon", "julia", "fractal_blend"])
def test_patterns_refuse_an_additive_float_mask_they_would_read_inverted(name):
    # SDPA reads a float mask as additive (0 = attend); .bool() read 0 as "masked", so an all-zeros mask gave
    # all-zero outputs without a word.
    q = torch.randn(1, 2, 4, 3)
    with pytest.raises(ValueError, match=r"mask: needs a bool mask.*float32"):
        build_pattern(name, n_heads=2)(q, q, q, mask=torch.zeros(1, 1, 4, 4))
    out = build_pattern(name, n_heads=2)(q, q, q, mask=torch.ones(1, 1, 4, 4, dtype=torch.long))  # 0/1 ints stay fine
    assert bool(out.abs().sum() > 0)
