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
