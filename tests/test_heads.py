"""Task heads: shapes, masks, causality of forecasting, gradient reversal, InfoNCE, uncertainty weights."""
import math

import pytest
import torch

from models.heads import (
    BehaviorHead, ContrastiveHead, DomainAdversarialHead, ForecastHead, MaskedReconstructionHead,
    UncertaintyWeightedLoss, channel_view, grad_reverse, info_nce, r2_score,
)

D, P = 16, 4


def _latents(b=2, s=6, seed=0):
    return torch.randn(b, s, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("loss", ["mse", "poisson"])
def test_reconstruction_shapes_and_padded_channels(loss):
    torch.manual_seed(0)
    head = MaskedReconstructionHead(d_model=D, patch_size=P, n_channel_ids=10, loss=loss)
    z = _latents()
    target = torch.poisson(torch.full((2, 3, 22), 2.0))
    ids = torch.tensor([[1, 5, 7], [1, 5, 7]])
    ref = head(z, target=target, channel_ids=ids)
    assert ref.prediction.shape == (2, 3, 22) and ref.loss.ndim == 0 and torch.isfinite(ref.loss)
    padded = torch.cat([target, torch.full((2, 2, 22), 1e4)], 1)
    mask = torch.tensor([[1, 1, 1, 0, 0]] * 2, dtype=torch.bool)
    out = head(z, target=padded, channel_mask=mask, channel_ids=torch.cat([ids, torch.full((2, 2), 99)], 1))
    torch.testing.assert_close(out.loss, ref.loss)
    torch.testing.assert_close(out.prediction[:, :3], ref.prediction)


def test_reconstruction_scores_only_masked_steps():
    head = MaskedReconstructionHead(d_model=D, patch_size=P, n_channel_ids=4, loss="poisson")
    z = _latents()
    target = torch.poisson(torch.full((2, 3, 24), 2.0))
    step_mask = torch.zeros(2, 6, dtype=torch.bool)
    step_mask[:, 2] = True  # only samples 8..11 are scored
    out = head(z, target=target, step_mask=step_mask)
    assert out.metrics["n_scored"] == 2 * 3 * P
    outside = target.clone()
    outside[..., :8] += 5.0
    outside[..., 12:] += 5.0
    torch.testing.assert_close(head(z, target=outside, step_mask=step_mask).loss, out.loss)
    inside = target.clone()
    inside[..., 8:12] += 5.0
    assert not torch.allclose(head(z, target=inside, step_mask=step_mask).loss, out.loss)


def test_reconstruction_learns_a_signal():
    torch.manual_seed(0)
    head = MaskedReconstructionHead(d_model=D, patch_size=P, n_channel_ids=4)
    z = _latents(s=8)
    target = torch.randn(2, 2, 32)
    opt = torch.optim.Adam(head.parameters(), lr=3e-2)
    first = head(z, target=target).loss.item()
    for _ in range(40):
        opt.zero_grad()
        loss = head(z, target=target).loss
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_forecast_is_causal():
    torch.manual_seed(0)
    head = ForecastHead(d_model=D, patch_size=P, n_channel_ids=4, horizon=2, kernel_size=3)
    z = _latents(s=8)
    target = torch.randn(2, 3, 32)
    ref = head(z, target=target).prediction
    assert ref.shape == (2, 3, 32)
    z2 = z.clone()
    z2[:, 5:] = torch.randn(2, 3, D)  # perturb latent steps 5..7
    out = head(z2, target=target).prediction
    torch.testing.assert_close(out[..., : 5 * P], ref[..., : 5 * P])  # steps 0..4 unchanged
    assert not torch.allclose(out[..., 5 * P:], ref[..., 5 * P:])


def test_forecast_loss_uses_the_future_target():
    head = ForecastHead(d_model=D, patch_size=P, n_channel_ids=4, horizon=1, loss="poisson")
    z = _latents(s=5)
    target = torch.poisson(torch.full((2, 2, 20), 1.0))
    base = head(z, target=target).loss
    t2 = target.clone()
    t2[..., :P] += 3.0  # the first step is never a forecast target
    torch.testing.assert_close(head(z, target=t2).loss, base)
    t3 = target.clone()
    t3[..., -P:] += 3.0
    assert not torch.allclose(head(z, target=t3).loss, base)


def test_behavior_head_shapes_mask_and_r2():
    torch.manual_seed(0)
    head = BehaviorHead(d_model=D, patch_size=P, n_features=3)
    z = _latents(s=5)
    out = head(z, target=torch.randn(2, 18, 3))
    assert out.prediction.shape == (2, 18, 3) and "r2" in out.metrics
    target = torch.randn(2, 18, 2)
    a = head(z, target=target, mask=torch.tensor([[1, 0], [1, 0]], dtype=torch.bool))
    target[..., 1] = 1e3
    b = head(z, target=target, mask=torch.tensor([[1, 0], [1, 0]], dtype=torch.bool))
    torch.testing.assert_close(a.loss, b.loss)


def test_r2_known_values():
    y = torch.randn(1, 100, 2)
    assert r2_score(y, y).item() == pytest.approx(1.0)
    assert r2_score(torch.zeros_like(y) + y.mean((0, 1)), y).item() == pytest.approx(0.0, abs=1e-6)


def test_r2_ignores_features_with_no_valid_sample():
    # A feature masked out everywhere (an occluded keypoint) has no R^2; it must not count as a
    # perfect 1.0 in the mean over features.
    y = torch.randn(1, 100, 2)
    pred = torch.zeros_like(y) + y.mean((0, 1))  # R^2 = 0 on every feature
    weight = torch.ones_like(y, dtype=torch.bool)
    weight[..., 1] = False
    assert r2_score(pred, y, weight).item() == pytest.approx(0.0, abs=1e-6)
    head = BehaviorHead(d_model=D, patch_size=P, n_features=2)
    out = head(_latents(b=1, s=25), target=y, mask=torch.tensor([[True, False]]))
    expected = r2_score(out.prediction[..., :1].detach(), y[..., :1])
    assert out.metrics["r2"].item() == pytest.approx(expected.item(), abs=1e-5)


def test_r2_of_a_constant_feature_is_finite():
    # A constant feature (a binary event that never fires in the batch) has no variance to
    # explain: 1 when predicted exactly, else 0 (scikit-learn's force_finite), never -1e5.
    const = torch.randn(1, 100, 2)
    const[..., 1] = 0.0
    near = const.clone()
    near[..., 1] = 0.01
    assert r2_score(const, const).item() == pytest.approx(1.0)
    assert r2_score(near, const).item() == pytest.approx(0.5, abs=1e-6)
    const[..., 1] = 0.1  # a constant that float32 means do not reproduce exactly
    assert r2_score(const, const).item() == pytest.approx(1.0)


def test_info_nce_known_values():
    z = torch.eye(4)
    loss, logits = info_nce(z, z, 0.5)
    expected = -math.log(math.exp(2) / (math.exp(2) + 3))
    assert loss.item() == pytest.approx(expected, rel=1e-5) and logits.shape == (4, 4)
    shuffled, _ = info_nce(z, z[[1, 0, 3, 2]], 0.5)
    assert shuffled.item() == pytest.approx(-math.log(1 / (math.exp(2) + 3)), rel=1e-5)


@pytest.mark.parametrize("pairing", ["sample", "time"])
def test_contrastive_head_aligns_views(pairing):
    torch.manual_seed(0)
    a = torch.randn(8, 5, D)
    b = a @ torch.randn(D, 3)  # behaviour is a function of the neural view
    head = ContrastiveHead(dim_a=D, dim_b=3, proj_dim=8, pairing=pairing)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = head(a, b).loss.item()
    for _ in range(25):
        opt.zero_grad()
        out = head(a, b)
        out.loss.backward()
        opt.step()
    n = 8 if pairing == "sample" else 40
    assert out.prediction.shape == (n, n) and out.loss.item() < first
    stim = ContrastiveHead(dim_a=D, dim_b=7)(a, torch.randn(8, 7))  # stimulus embeddings (B, D_s)
    assert stim.prediction.shape == (8, 8) and 0 <= stim.metrics["accuracy"] <= 1


def test_gradient_reversal_flips_and_scales_the_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(3, 4)
    (grad_reverse(x, 0.5) * w).sum().backward()
    torch.testing.assert_close(x.grad, -0.5 * w)
    torch.testing.assert_close(grad_reverse(x, 0.5), x)


def test_domain_adversarial_head_reverses_encoder_gradient():
    torch.manual_seed(0)
    head = DomainAdversarialHead(d_model=D, n_domains=3, scale=1.0)
    z = _latents(b=4).requires_grad_(True)
    target = torch.tensor([0, 1, 2, 1])
    out = head(z, target=target)
    assert out.prediction.shape == (4, 3) and 0 <= out.metrics["accuracy"] <= 1
    out.loss.backward()
    g_rev = z.grad.clone()
    z.grad = None
    plain = head.classifier(z.mean(1))
    torch.nn.functional.cross_entropy(plain, target).backward()
    torch.testing.assert_close(g_rev, -z.grad)
    with pytest.raises(ValueError, match="target"):
        head(z, target=torch.tensor([0, 1, 5, 1]))


def test_uncertainty_weighting():
    uw = UncertaintyWeightedLoss(task_names=["recon", "behavior"])
    losses = {"recon": torch.tensor(2.0), "behavior": torch.tensor(0.5)}
    assert uw(losses).item() == pytest.approx(0.5 * 2.5)
    assert uw({"recon": torch.tensor(2.0)}).item() == pytest.approx(1.0)
    opt = torch.optim.SGD(uw.parameters(), lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        uw(losses).backward()
        opt.step()
    # Optimum: exp(s_i) = L_i, so weights exp(-s_i) = 1 / L_i.
    assert uw.weights()["recon"] == pytest.approx(0.5, rel=1e-2)
    assert uw.weights()["behavior"] == pytest.approx(2.0, rel=1e-2)
    with pytest.raises(ValueError, match="unknown"):
        uw({"nope": torch.tensor(1.0)})


def test_channel_view_layouts():
    batch = {"spikes": torch.zeros(2, 10, 3), "unit_ids": torch.zeros(2, 3, dtype=torch.long),
             "lfp": torch.zeros(2, 4, 10), "lfp_mask": torch.ones(2, 4, dtype=torch.bool)}
    x, m, ids = channel_view(batch, "spikes")
    assert x.shape == (2, 3, 10) and m is None and ids.shape == (2, 3)
    x, m, ids = channel_view(batch, "lfp")
    assert x.shape == (2, 4, 10) and m.shape == (2, 4) and ids is None


def test_time_pairing_pools_the_finer_view_and_dann_schedule():
    from models.heads import dann_schedule

    head = ContrastiveHead(dim_a=D, dim_b=2, pairing="time")
    out = head(_latents(b=2, s=6), torch.randn(2, 24, 2))  # behaviour at 4 samples per latent step
    assert out.prediction.shape == (12, 12)
    with pytest.raises(ValueError, match="multiple"):
        head(_latents(b=2, s=6), torch.randn(2, 25, 2))
    assert dann_schedule(0.0) == 0.0 and dann_schedule(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann_schedule(0.5, max_scale=0.5) < 0.5 and dann_schedule(2.0) == dann_schedule(1.0)


def test_time_pairing_without_a_common_valid_step_is_an_error_not_a_nan():
    head = ContrastiveHead(dim_a=8, dim_b=4, proj_dim=8, pairing="time")
    a, b = torch.randn(2, 6, 8), torch.randn(2, 6, 4)
    a_mask = torch.zeros(2, 6, dtype=torch.bool)
    a_mask[:, :3] = True
    b_mask = ~a_mask  # valid steps never overlap
    with pytest.raises(ValueError, match="no time step is valid in both"):
        head(a, b, a_mask=a_mask, b_mask=b_mask)
    assert torch.isfinite(head(a, b, a_mask=a_mask, b_mask=a_mask).loss)
