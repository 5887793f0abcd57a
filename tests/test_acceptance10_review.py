"""The stability acceptance measures the graph of latent channels, as the graph prior does."""
import torch

from fmx.acceptance import _val_batches, stability


def test_stability_graph_nodes_are_the_latent_channels(tmp_path):
    from fmx.config import compose
    from models.registry import build_lightning_module

    cfg = compose(["model=tiny", "data=synthetic"])
    torch.manual_seed(0)
    module = build_lightning_module(cfg)
    torch.save({"state_dict": module.state_dict()}, tmp_path / "model.ckpt")
    from ray.train import Checkpoint

    got = stability(cfg=cfg, checkpoint=Checkpoint.from_directory(str(tmp_path)), n_batches=2)

    import fractals.metrics as fm

    ref, batches = _val_batches(cfg, None, 2)
    ref.load_state_dict(module.state_dict())
    ref.eval()
    values, nodes = [], set()
    with torch.no_grad():
        for b in batches:
            lat = ref(b)["latents"]["ssm"]  # (B, S, D)
            adj = fm.functional_connectivity_latents(lat, thresh=0.3)
            nodes.add(adj.shape[-1])
            values.append(torch.as_tensor(fm.graph_fractal_dim(adj, [1, 2, 3, 4, 5, 6])).float().mean())
    assert nodes == {cfg["model"]["d_model"]}  # one node per latent channel, not per time step
    v = torch.stack(values)
    assert got["graphfd_mean"] == float(v.mean())
    assert got["graphfd_var"] == float(v.var(unbiased=True))


def test_a_dead_latent_channel_is_left_out_of_the_stability_graph(tmp_path, monkeypatch):
    """An SSM channel constant in time voided the benchmark (FC raises on it); it is left out instead."""
    import fmx.acceptance as acceptance
    import fractals.metrics as fm

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 40, 9, generator=gen)
    latents = z + z.roll(-1, -1)  # ring-like correlations between neighbouring channels
    latents[..., 4] = 0.25  # dead channel

    class Frozen(torch.nn.Module):
        def forward(self, batch):
            return {"latents": {"ssm": latents}}

    monkeypatch.setattr(acceptance, "_val_batches", lambda cfg, builders, n: (Frozen(), [None, None]))
    monkeypatch.setattr(acceptance, "_load", lambda module, checkpoint: None)
    got = acceptance.stability(cfg={}, checkpoint=None)
    keep = [c for c in range(9) if c != 4]
    expected = torch.as_tensor(fm.graph_fractal_dim(fm.functional_connectivity_latents(latents[..., keep], thresh=0.3),
                                                    None)).float().mean()
    assert got["graphfd_mean"] == float(expected) and got["graphfd_var"] == 0.0
