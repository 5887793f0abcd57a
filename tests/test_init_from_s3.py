"""An s3:// model.init_from: fetched once per node into a cache by the platform before a trial builds its module
(real S3 server, moto), never cached half-downloaded, a missing object named; unchecked on meta, refused by plain
models code with the fix."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
import torch

from fmx import init_from
from fmx.config import compose
from fmx.train_worker import build_module_and_data
from models.registry import build_lightning_module

_S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
           "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "FMX_S3_SECRET_FILE")


@pytest.fixture
def node_tmp(tmp_path, monkeypatch):
    """This test's own temp dir as the node's: the cache goes under it, not the machine's /tmp."""
    folder = tmp_path / "node-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def s3(moto_s3, monkeypatch):
    for k in _S3_ENV:
        monkeypatch.delenv(k, raising=False)
    for k, v in moto_s3.env().items():  # as a trial worker gets them (fmx.ray_setup forwards the endpoint)
        monkeypatch.setenv(k, v)
    return moto_s3


def _pretrained(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(123)
    module = build_lightning_module(compose(["model=tiny"]))
    path = tmp_path / "pretrained.ckpt"
    torch.save({"state_dict": module.state_dict()}, path)
    return path, {k: v.clone() for k, v in module.model.state_dict().items()}


def _upload(server, path: Path) -> tuple[str, str, str]:
    bucket = server.make_bucket()
    key = "prefix/pretrain/trial_0/checkpoint_000009/model.ckpt"
    server.client().upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}", bucket, key


def _cfg(uri: str) -> dict:
    cfg = compose(["model=tiny"])
    cfg["model"]["init_from"] = uri
    return cfg


def test_a_trial_builds_from_an_s3_checkpoint_and_a_second_build_reuses_the_node_cache(tmp_path, node_tmp, s3):
    path, saved = _pretrained(tmp_path)
    uri, bucket, key = _upload(s3, path)
    cfg = _cfg(uri)
    torch.manual_seed(7)  # another fresh init: equality below comes from the checkpoint
    module, _ = build_module_and_data(cfg)
    for name, value in module.model.state_dict().items():
        torch.testing.assert_close(value, saved[name], rtol=0, atol=0, msg=name)
    assert cfg["model"]["init_from"] == uri  # the caller's config is left as it was
    cached = init_from.cache_path(uri)
    assert cached.is_file() and cached.is_relative_to(node_tmp / "fmx-init-from")
    assert [p.name for p in cached.parent.iterdir()] == ["model.ckpt"]  # no temp part left beside it
    mtime = cached.stat().st_mtime_ns

    s3.client().delete_object(Bucket=bucket, Key=key)  # only the node's cache has it now
    torch.manual_seed(8)
    again, _ = build_module_and_data(cfg)
    for name, value in again.model.state_dict().items():
        torch.testing.assert_close(value, saved[name], rtol=0, atol=0, msg=name)
    assert cached.stat().st_mtime_ns == mtime


def test_a_missing_s3_object_names_model_init_from_the_uri_and_the_fix(node_tmp, s3):
    uri = f"s3://{s3.make_bucket()}/prefix/no_such_trial/checkpoint_000001/model.ckpt"
    with pytest.raises(ValueError, match=rf"model\.init_from: no object at {re.escape(uri)}; give the s3:// URI of "
                                         r"an existing model\.ckpt .* or a local file path"):
        build_module_and_data(_cfg(uri))
    assert not init_from.cache_path(uri).exists()


def test_an_interrupted_download_leaves_no_cached_checkpoint(tmp_path, node_tmp, s3, monkeypatch):
    path, saved = _pretrained(tmp_path)
    uri, _, _ = _upload(s3, path)
    real_copy = init_from._copy

    def copy_then_fail(src, dst):
        dst.write(src.read(4096))  # some bytes reach the disk, then the connection drops
        raise OSError("connection reset by peer")

    monkeypatch.setattr(init_from, "_copy", copy_then_fail)
    with pytest.raises(ValueError, match=rf"model\.init_from: downloading {re.escape(uri)} failed: connection reset"):
        build_module_and_data(_cfg(uri))
    cached = init_from.cache_path(uri)
    assert cached.parent.is_dir() and list(cached.parent.iterdir()) == []  # neither model.ckpt nor a part

    monkeypatch.setattr(init_from, "_copy", real_copy)  # the next try downloads it whole
    module, _ = build_module_and_data(_cfg(uri))
    for name, value in module.model.state_dict().items():
        torch.testing.assert_close(value, saved[name], rtol=0, atol=0, msg=name)


def test_validate_builds_on_meta_with_an_s3_init_from_and_no_server(tmp_path, monkeypatch):
    from fmx.schema import load_sweep
    from fmx.trial_build import check_trials_build

    for k in _S3_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: it must not be asked
    path = tmp_path / "finetune.yaml"
    path.write_text("name: finetune_s3\nbase:\n  - model=tiny\n  - data=synthetic\n"
                    "  - model.init_from=s3://bucket/prefix/pretrain/trial_0/checkpoint_000009/model.ckpt\n"
                    "  - model.adapters.kind=lora\nmethod: random\nmetric: {name: val/loss, goal: minimize}\n"
                    "parameters:\n  optim.lr: {distribution: log_uniform, min: 0.0001, max: 0.01}\nrun_cap: 2\n")
    check_trials_build(load_sweep(path), file=path)


def test_plain_models_code_refuses_a_uri_with_the_fix():
    cfg = compose(["model=tiny"])
    cfg["model"]["init_from"] = "s3://bucket/prefix/model.ckpt"
    with pytest.raises(ValueError, match=r"model\.init_from: s3://bucket/prefix/model\.ckpt is a URI; the fmx "
                                         r"platform fetches s3:// checkpoints before building \(fmx\.train_worker\); "
                                         r"in plain Python download it first and pass the file path"):
        build_lightning_module(cfg)


def test_a_local_sweep_looks_up_an_s3_init_from_before_ray_starts(tmp_path, node_tmp, s3, capsys):
    import typer

    from fmx.commands.sweep import _check_local_data
    from fmx.schema import load_sweep

    path, _ = _pretrained(tmp_path)
    uri, bucket, _ = _upload(s3, path)
    sweep_file = tmp_path / "finetune.yaml"
    text = ("name: finetune_s3\nbase:\n  - model=tiny\n  - model.init_from={uri}\nmethod: random\n"
            "metric: {{name: val/loss, goal: minimize}}\nparameters:\n"
            "  optim.lr: {{distribution: log_uniform, min: 0.0001, max: 0.01}}\nrun_cap: 1\n")
    sweep_file.write_text(text.format(uri=uri))
    _check_local_data(load_sweep(sweep_file), sweep_file, "local")  # there: nothing said, nothing fetched
    assert not init_from.cache_path(uri).exists()

    missing = f"s3://{bucket}/prefix/pretrain/trial_9/checkpoint_000009/model.ckpt"
    sweep_file.write_text(text.format(uri=missing))
    with pytest.raises(typer.Exit):
        _check_local_data(load_sweep(sweep_file), sweep_file, "local")
    out = " ".join(capsys.readouterr().out.split())
    assert f"base[1]: model.init_from: no object at {missing}; give the s3:// URI" in out


def test_the_acceptance_fetch_uses_the_sweeps_endpoint_when_the_environment_names_none(tmp_path, node_tmp, s3,
                                                                                        monkeypatch):
    """The acceptance benchmarks build outside the Train workers: the trial passes its sweep's storage endpoint."""
    path, _ = _pretrained(tmp_path)
    uri, _, _ = _upload(s3, path)
    endpoint = s3.env()["AWS_ENDPOINT_URL"]
    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(k, raising=False)  # a sweep whose file alone names the store
    local = init_from.localize_init_from(_cfg(uri), endpoint_url=endpoint)
    assert Path(local["model"]["init_from"]) == init_from.cache_path(uri)
    assert init_from.cache_path(uri).read_bytes() == path.read_bytes()
