"""Criticality toolkit: spectral norms, regularizers, indicators on constructed cases."""
import math

import pytest
import torch
from torch import nn

from fractals.criticality import (
    AdaptiveSpectralRegularizer,
    CriticalityLR,
    SpectralRegularizer,
    boundary_box_dimension,
    criticality_score,
    dead_neuron_rate,
    layerwise_targets,
    perturbation_sensitivity,
    singular_value_exponent,
    spectral_radius,
    top_singular_value,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_power_iteration_matches_svd_batched():
    w = torch.randn(3, 200, 150, generator=_gen(), dtype=torch.float64)
    sigma = top_singular_value(w, exact_below=0, n_iter=500, tol=1e-10)
    exact = torch.linalg.svdvals(w)[..., 0]
    torch.testing.assert_close(sigma, exact, rtol=1e-6, atol=0)


def test_small_matrices_use_exact_svd_and_gradient_is_u_vT():
    w = torch.randn(5, 4, generator=_gen(1), dtype=torch.float64, requires_grad=True)
    sigma = top_singular_value(w)
    sigma.backward()
    w2 = w.detach().clone().requires_grad_(True)
    torch.linalg.matrix_norm(w2, ord=2).backward()
    torch.testing.assert_close(w.grad, w2.grad)


def test_unconverged_power_iteration_warns():
    w = torch.randn(100, 100, generator=_gen(2), dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        top_singular_value(w, exact_below=0, n_iter=2, tol=1e-14)


def test_bad_weight_raises():
    with pytest.raises(ValueError, match="weight"):
        top_singular_value(torch.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        top_singular_value(torch.full((3, 3), float("nan")))


def test_spectral_radius_of_scaled_rotation_and_diagonal_ssm():
    c, s = math.cos(0.3), math.sin(0.3)
    rot = 0.5 * torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    assert spectral_radius(rot).item() == pytest.approx(0.5)
    a = torch.exp(torch.tensor([-0.1, -2.0]))  # Mamba-2 style exp(dt*A) per head
    assert spectral_radius(a).item() == pytest.approx(math.exp(-0.1))


def test_regularizer_brings_sigma_to_target():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10))
    reg = SpectralRegularizer(targets=[0.7, 1.3], weight=1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    for _ in range(300):
        loss, _ = reg(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    sig = {k: torch.linalg.svdvals(m.weight)[0].item() for k, m in (("0", model[0]), ("2", model[2]))}
    assert sig["0"] == pytest.approx(0.7, abs=0.01)
    assert sig["2"] == pytest.approx(1.3, abs=0.01)


def test_zero_weight_costs_nothing():
    model = nn.Linear(3, 3)
    loss, sig = SpectralRegularizer(weight=0.0)(model)
    assert loss.item() == 0.0 and sig == {}


def test_nan_or_inf_weight_is_rejected():
    # weight=nan passed the "weight < 0" check and made every loss NaN.
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="weight"):
            SpectralRegularizer(weight=bad)


def test_target_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="targets: 1 values for 2 layers"):
        SpectralRegularizer(targets=[1.0])(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))


def test_layerwise_targets_are_geometric():
    t = layerwise_targets(3, first=0.5, last=2.0)
    assert t == pytest.approx([0.5, 1.0, 2.0])


def test_adaptive_targets_move_against_the_criticality_score():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    reg = AdaptiveSpectralRegularizer(targets=1.0, rate=0.1)
    score = reg.update_targets(model, {"sensitivity": 5.0, "dead_rate": 0.0})  # chaotic
    assert score > 0
    assert all(t < 1.0 for t in reg.current.values())
    score = reg.update_targets(model, {"sensitivity": 0.05, "dead_rate": 0.6})  # ordered
    assert score < 0
    assert criticality_score({"sensitivity": 1.0, "dead_rate": 0.1}) == pytest.approx(0.0)


def test_a_collapsed_network_scores_ordered_and_its_targets_grow():
    # All units dead: no perturbation gets through, sensitivity is exactly 0 (the most ordered
    # network), where the adaptive trial must raise its targets rather than crash.
    net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    nn.init.constant_(net[0].bias, -10.0)
    sens = perturbation_sensitivity(net, torch.randn(16, 2, generator=_gen(5)))
    assert sens == 0.0
    assert criticality_score({"sensitivity": sens}) == -1.0
    reg = AdaptiveSpectralRegularizer(targets=1.0, rate=0.1)
    assert reg.update_targets(net, {"sensitivity": sens, "dead_rate": 1.0}) < 0
    assert all(t > 1.0 for t in reg.current.values())
    with pytest.raises(ValueError, match="sensitivity"):
        criticality_score({"sensitivity": -0.1})


def test_criticality_lr_is_full_at_criticality_and_decays_with_distance():
    sched = CriticalityLR(alpha=0.5, eps=0.05, min_factor=0.1)
    assert sched.update({"a": 1.0}, {"a": 1.0}) == pytest.approx(1.0)
    far = sched.update({"a": 1.5}, {"a": 1.0})
    assert far == pytest.approx((0.55 / 0.05) ** -0.5)


def test_dead_neuron_rate_all_dead_and_none_dead():
    layer = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
    nn.init.constant_(layer[0].bias, -100.0)
    x = torch.randn(64, 8, generator=_gen(3))
    assert dead_neuron_rate(layer(x)) == 1.0
    assert dead_neuron_rate(torch.randn(64, 16, generator=_gen(4))) == 0.0


def test_perturbation_sensitivity_of_a_scaled_orthogonal_map_is_its_scale():
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=_gen(5), dtype=torch.float64))
    x = torch.randn(32, 10, generator=_gen(6), dtype=torch.float64)
    gain = perturbation_sensitivity(lambda z: z @ (2.5 * q), x, generator=_gen(7))
    assert gain == pytest.approx(2.5, rel=1e-6)


def test_boundary_dimension_of_a_line_is_one():
    d = boundary_box_dimension(lambda p: p[:, 1] > 0.3 * p[:, 0] + 0.1, (-1, 1, -1, 1), levels=6)
    assert d == pytest.approx(1.0, abs=0.03)


def _weierstrass_boundary(a, b=3.0, terms=9):
    # W(x) = sum a^n cos(b^n pi x), 1/b < a < 1, has box dimension 2 + ln a / ln b.
    def predict(p):
        x = p[:, 0].double()
        return p[:, 1].double() > sum(a**n * torch.cos(b**n * math.pi * x) for n in range(terms))

    return predict


def test_boundary_dimension_of_a_circle_is_one():
    d = boundary_box_dimension(lambda p: (p**2).sum(1) < 0.5, (-1, 1, -1, 1), levels=6)
    assert d == pytest.approx(1.0, abs=0.03)


def test_boundary_dimension_grows_with_weierstrass_roughness():
    dims = [boundary_box_dimension(_weierstrass_boundary(a), (0, 1, -4, 4), levels=6) for a in (0.5, 0.7, 0.85)]
    assert dims[0] > 1.1 and dims[0] < dims[1] < dims[2] < 1.9


def test_refinement_matches_full_grid_count_with_fewer_evaluations():
    predict = _weierstrass_boundary(0.7)
    calls = []

    def counting(p):
        calls.append(p.shape[0])
        return predict(p)

    _, counts = boundary_box_dimension(counting, (0, 1, -4, 4), coarse=16, levels=5, return_counts=True)
    n = 16 * 2**5
    xs, ys = torch.meshgrid(torch.arange(n + 1) / n, -4 + 8 * torch.arange(n + 1) / n, indexing="ij")
    lab = predict(torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)).reshape(n + 1, n + 1)
    corners = torch.stack([lab[:-1, :-1], lab[1:, :-1], lab[:-1, 1:], lab[1:, 1:]])
    full = int((corners != corners[:1]).any(0).sum())
    assert counts[-1][1] == pytest.approx(full, rel=0.15)
    boxes_evaluated = sum(calls) / 5  # corners and centre per box
    assert boxes_evaluated < 0.2 * n**2


def test_singular_value_exponent_recovers_planted_power_law():
    u, _ = torch.linalg.qr(torch.randn(64, 64, generator=_gen(8), dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(64, 64, generator=_gen(9), dtype=torch.float64))
    s = torch.arange(1, 65, dtype=torch.float64) ** -0.8
    w = u @ torch.diag(s) @ v.T
    assert singular_value_exponent(w).item() == pytest.approx(0.8, abs=1e-6)


def test_neurofmx_takes_the_spectral_regularizer_by_config():
    from fmx.config import compose
    from models.lightning import build_lightning_module

    cfg = compose(["model=tiny", "criticality.enable=true", "criticality.weight=10.0", "criticality.target=0.5"])
    module = build_lightning_module(cfg)
    assert set(module.spectral_regs) == {"backbone"}
    loss, sigmas = module._spectral_loss()
    assert loss.item() > 0 and all(name.startswith("backbone.") for name in sigmas)
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    before = float(torch.stack(list(sigmas.values())).sub(0.5).abs().mean())
    for _ in range(30):
        loss, sigmas = module._spectral_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = float(torch.stack(list(sigmas.values())).sub(0.5).abs().mean())
    assert after < 0.5 * before
    with pytest.raises(ValueError, match="criticality.modules"):
        build_lightning_module(compose(["model=tiny", "criticality.enable=true", "criticality.modules=[nope]"]))


def test_power_iteration_finds_top_singular_value_orthogonal_to_ones():
    # Starting from the all-ones vector, a layer whose rows sum to zero (difference filters)
    # read sigma = 0, and a centring-like matrix read its smallest singular value.
    n = 100
    a = torch.randint(-3, 4, (n, n), generator=_gen(), dtype=torch.int64).double()
    diff = a - a.roll(1, dims=1)  # integer entries: every row sums to exactly zero
    ones = torch.full((n, n), 1.0 / n, dtype=torch.float64)
    centring = 2.0 * (torch.eye(n, dtype=torch.float64) - ones) + 0.1 * ones
    for w in (diff, centring, centring.float()):
        got = top_singular_value(w, exact_below=0, n_iter=3000, tol=1e-9)
        assert float(got) == pytest.approx(float(torch.linalg.svdvals(w.double())[0]), rel=1e-4)
    # A zero start vector (e.g. saved from an all-zero layer) must not stay stuck at zero.
    got = top_singular_value(centring, exact_below=0, n_iter=2000, tol=1e-9, init=torch.zeros(n, dtype=torch.float64))
    assert float(got) == pytest.approx(2.0, rel=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_perturbation_sensitivity_takes_a_cuda_generator():
    # randn(..., generator=<cuda generator>) on the default CPU device raised a RuntimeError.
    x = torch.randn(16, 8, device="cuda")
    gain = perturbation_sensitivity(lambda v: 2.0 * v, x, generator=torch.Generator("cuda").manual_seed(0))
    assert gain == pytest.approx(2.0, rel=1e-3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_get_sigma_in_their_dtype(dtype):
    # bf16-true training with criticality on: torch has no half-precision SVD on CPU ("linalg_svd_cpu").
    w = torch.randn(6, 5, generator=torch.Generator().manual_seed(1)).to(dtype).requires_grad_()
    sigma = top_singular_value(w)
    exact = torch.linalg.matrix_norm(w.detach().float(), 2)
    assert sigma.dtype == dtype and abs(float(sigma) - float(exact)) <= 0.01 * float(exact)
    sigma.backward()
    assert w.grad.dtype == dtype and bool(torch.isfinite(w.grad).all()) and float(w.grad.abs().sum()) > 0
