"""The docs say what the code does: commands, options, paths, defaults and examples in README.md,
benchmarks/README.md and docs/*.md are checked against the code (fast: no servers, no training)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Files the docs tell the user to create, or that `make deploy` writes: not in the checkout.
USER_FILES = {"infra/.state/coreweave.kubeconfig", "terraform/coreweave/terraform.tfvars",
              "terraform/crusoe/terraform.tfvars"}
REPO_ROOTS = ("models/", "fractals/", "platform/", "benchmarks/", "tests/", "docs/", "sweeps/", "examples/",
              "helm/", "terraform/", "infra/", "docker/")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _fmx_invocations():
    """(doc, command text) for every `fmx ...` in a code block line or an inline code span."""
    for doc in DOCS:
        text = _text(doc)
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        lines = [ln.split(" #")[0] for b in blocks for ln in b.splitlines()]
        spans = re.findall(r"(?<!`)`([^`\n]+)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.S))
        for chunk in lines + spans:
            for m in re.finditer(r"(?:^|[\s(])(?:\.venv/bin/)?fmx ([^;&]*)", chunk):
                yield doc.name, m.group(1).strip()


def _resolve(root, words):
    """The click command reached by the leading sub-command words, and the words it consumed."""
    cmd, used = root, []
    for word in words:
        if not hasattr(cmd, "commands"):  # a group (typer vendors its own click: no isinstance check)
            break
        names = word.split("|")  # `fmx job status|logs|stop|list`
        if not all(n in cmd.commands for n in names):
            break
        cmd, used = cmd.commands[names[0]], used + [word]
        if len(names) > 1:
            return None, used  # alternatives, each a sub-command: options not attributable
    return cmd, used


def test_every_fmx_command_and_option_in_the_docs_exists():
    import typer.main

    import fmx.cli

    root = typer.main.get_command(fmx.cli.app)
    seen, problems = 0, []
    for doc, command in _fmx_invocations():
        try:
            words = shlex.split(command.replace("[", " ").replace("]", " "))
        except ValueError:
            words = command.split()
        cmd, used = _resolve(root, words)
        if not used:
            continue  # prose such as "`fmx` runs in", not an invocation
        seen += 1
        rest = words[len(used):]
        if (cmd is None or hasattr(cmd, "commands")) and rest and re.fullmatch(r"[a-z][a-z|-]*", rest[0]):
            problems.append(f"{doc}: `fmx {command}`: {rest[0]!r} is not a sub-command of `fmx {' '.join(used)}`")
            continue
        if cmd is None:
            continue
        opts = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        for word in rest:
            flag = word.split("=")[0].rstrip(".,`")
            if flag.startswith("--") and flag not in opts:
                problems.append(f"{doc}: `fmx {command}`: {flag} is not an option of `fmx {' '.join(used)}`")
    assert seen > 30, f"found only {seen} fmx invocations in the docs: the scan is broken"
    assert not problems, "\n".join(problems)


def test_repository_paths_named_in_the_docs_exist():
    missing = []
    for doc in DOCS:
        for span in re.findall(r"`([^`\n]+)`", _text(doc)):
            for tok in re.split(r"[\s,;()=]+", span):
                tok = tok.strip(".:\"'")
                if not tok.startswith(REPO_ROOTS) or re.search(r"[<>*{}|$]|\.\.\.|NAME|XXXX", tok):
                    continue
                if tok not in USER_FILES and not (REPO / tok).exists():
                    missing.append(f"{doc.relative_to(REPO)}: {tok}")
    assert not missing, "\n".join(missing)


def test_relative_markdown_links_resolve():
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", _text(doc)):
            if "://" not in target and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(REPO)}: {target}")
    assert not broken, "\n".join(broken)


def test_sweep_field_defaults_are_the_ones_docs_sweeps_md_lists():
    from fmx.schema import Sweep

    doc = re.sub(r"\s+", " ", _text(REPO / "docs" / "sweeps.md"))
    s = Sweep.model_validate({"name": "x", "metric": {"name": "val/loss", "goal": "minimize"}})
    res, st, tr, et = s.resources, s.storage, s.tracking, s.early_terminate
    claims = [
        f"`{{workers: {res.workers}, cpus_per_worker: {res.cpus_per_worker:g}, "
        f"gpus_per_worker: {res.gpus_per_worker:g}}}`",
        f"`{{path: {st.path}, endpoint_url: null, region: null, keep_best: {st.keep_best}}}`",
        f"`{{uri: {tr.uri}, experiment: null, artifact_location: null}}`",
        f"grace_period: {et.grace_period}, reduction_factor: {et.reduction_factor}}}`",
        f"trials to sample (default {s.run_cap})",
        f"trials at once (default {s.max_concurrent})",
        f"from its latest checkpoint (default {s.max_failures})",
        f"(default {s.seed}); a `seed` parameter",
        f"`{s.method}` (Optuna TPE, default)",
    ]
    assert st.endpoint_url is None and st.region is None and tr.experiment is None and et.type == "none"
    assert [c for c in claims if c not in doc] == []


def test_distribution_example_of_docs_sweeps_md_validates(tmp_path):
    import yaml

    from fmx.schema import load_sweep

    block = re.search(r"### Distributions\s+```yaml\n(.*?)```", _text(REPO / "docs" / "sweeps.md"), re.S).group(1)
    data = {"name": "doc-example", "method": "random", "metric": {"name": "val/loss", "goal": "minimize"},
            **yaml.safe_load(block)}
    path = tmp_path / "example.yaml"
    path.write_text(yaml.safe_dump(data))
    sweep = load_sweep(path)  # composes the config: every key path and value type is checked
    assert len(sweep.parameters) == len(data["parameters"]) == 6


def test_error_example_of_docs_sweeps_md_is_what_validate_prints(tmp_path):
    from fmx.schema import SweepFileError, load_sweep

    text = _text(REPO / "docs" / "sweeps.md")
    shown = re.search(r"for example\s+```\n(.*?)```", text, re.S).group(1)
    smoke = _text(REPO / "sweeps" / "smoke.yaml").replace("lambda_spec:", "lamda_spec:")
    path = tmp_path / "sweeps" / "x.yaml"
    path.parent.mkdir()
    path.write_text(smoke)
    with pytest.raises(SweepFileError) as err:
        load_sweep(path)
    got = " ".join(str(err.value).replace(str(path), "sweeps/x.yaml").split())
    shown = " ".join(shown.split())
    head, _, keys = shown.partition("allowed: keys under fractals.priors: ")
    assert keys and got.startswith(head + "allowed: keys under fractals.priors: ")
    # The example may lag a newly added prior key; every key it lists must still be allowed.
    assert set(keys.split(", ")) <= set(got.rsplit(": ", 1)[1].split(", "))


def test_preset_table_of_docs_model_md_matches_count_parameters():
    from models.presets import count_parameters, load_preset

    rows = re.findall(r"^\| `(tiny|small|medium|large)` \|(.*)$", _text(REPO / "docs" / "model.md"), re.M)
    assert [r[0] for r in rows] == ["tiny", "small", "medium", "large"]
    scale = {"k": 1e3, "M": 1e6}
    for name, rest in rows:
        cells = [c.strip() for c in rest.split("|")]
        number, unit = re.fullmatch(r"([\d.]+) ([kM])", cells[4]).groups()
        count = count_parameters(load_preset(name))
        assert round(count / scale[unit], 1) == float(number), (name, count, cells[4])
        cfg = load_preset(name)
        assert int(cells[0]) == cfg["d_model"] and int(cells[1]) == cfg["ssm"]["n_layers"], name
        assert int(cells[2]) == cfg["perceiver"]["n_self_layers"], name
        assert int(cells[3]) == cfg["popt"]["n_summary_tokens"], name


def test_readme_python_example_runs_on_a_small_batch():
    import numpy as np
    import torch

    block = re.search(r"```python\n(.*?)```", _text(REPO / "README.md"), re.S).group(1)
    assert "batch_shape=(32, 256)" in block
    code = block.replace("batch_shape=(32, 256)", "batch_shape=(2, 3)")  # the documented shape is ~0.5 GB
    scope = {"recording": np.random.default_rng(0).standard_normal((4, 5000))}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    x, table, summary = scope["x"], scope["table"], scope["summary"]
    assert isinstance(x, torch.Tensor) and x.shape == (2, 3, 8192)
    assert list(table.columns) == ["channel", "measure", "value", "ok", "flag", "r2"]
    assert summary["n_channels"] == 4 and np.isfinite(summary["dfa_alpha_mean"])



PACKAGE_DIRS = {"fractals": REPO / "fractals", "models": REPO / "models", "fmx": REPO / "platform" / "fmx"}


def _module_file(parts: list[str]) -> Path | None:
    base = PACKAGE_DIRS[parts[0]].joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _top_level_names(tree) -> dict:
    import ast

    names: dict = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            names.update({t.id: node for t in node.targets if isinstance(t, ast.Name)})
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update({(a.asname or a.name).split(".")[0]: node for a in node.names})
    return names


def _defined(name: str) -> bool:
    """Whether a dotted name is a module, or a name a module defines (read from the source, no import:
    importing fmx.runner and friends would pull in Ray and take seconds)."""
    import ast

    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        path = _module_file(parts[:i])
        if path is not None:
            break
    else:
        return False
    rest = parts[i:]
    if not rest:
        return True
    source = path.read_text(encoding="utf-8")
    names = _top_level_names(ast.parse(source))
    if rest[0] not in names:
        # a lazy re-export through a module __getattr__ (fractals.regularizers.FractalPriors)
        return "def __getattr__" in source and f'"{rest[0]}"' in source
    node = names[rest[0]]
    if len(rest) == 1 or not isinstance(node, ast.ClassDef):
        return True
    # a method of the class, or one it may inherit (NeuroFMxModule.load_from_checkpoint from Lightning)
    return rest[1] in _top_level_names(ast.Module(body=node.body, type_ignores=[])) or bool(node.bases)


def test_dotted_names_in_the_docs_are_defined_config_keys_or_tags():
    """`fractals.x.y`, `models.x.y`, `fmx.x.y` in the docs: a module or a name it defines, a key path of the
    composed config (`fractals.priors.lambda_spec`), or a tag the platform writes (`fmx.trial_id`)."""
    from fmx.config import compose, get_path

    cfg = compose([])
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "platform" / "fmx").rglob("*.py"))
    names = {m.group(1) for doc in DOCS for span in re.findall(r"`([^`\n]+)`", _text(doc))
             for m in re.finditer(r"\b((?:fractals|models|fmx)(?:\.[A-Za-z_]\w*)+)", span)}
    unknown = []
    for name in sorted(names):
        if _defined(name) or f'"{name}"' in sources:
            continue
        try:
            get_path(cfg, name)
        except (KeyError, ValueError, TypeError):
            unknown.append(name)
    assert len(names) > 30 and unknown == [], unknown
