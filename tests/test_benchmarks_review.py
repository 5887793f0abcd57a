"""Benchmark scripts and examples as a user runs them: every option the docs and the GPU scripts pass
exists, bad options stop with a clear error before any work, and the JSON a script writes is valid
and keeps what earlier runs saved. Fast: nothing here times or trains anything."""
from __future__ import annotations

import ast
import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------- options named anywhere exist
def _options(script: Path) -> tuple[dict, list]:
    """``--flag`` -> (nargs, choices, type name, takes a value) and the positional choices, from the
    script's ``add_argument`` calls (read statically: nothing is imported or run)."""
    opts, positional = {}, []
    for node in ast.walk(ast.parse(script.read_text())):
        if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"):
            continue
        names = [a.value for a in node.args if isinstance(a, ast.Constant)]
        kw = {k.arg: k.value for k in node.keywords}
        choices = ast.literal_eval(kw["choices"]) if "choices" in kw else None
        nargs = ast.literal_eval(kw["nargs"]) if "nargs" in kw else None
        action = ast.literal_eval(kw["action"]) if "action" in kw else None
        typ = kw["type"].id if isinstance(kw.get("type"), ast.Name) else None
        if names and names[0].startswith("--"):
            for n in names:
                opts[n] = (nargs, choices, typ, action not in ("store_true", "store_false"))
        elif choices:
            positional.append(choices)
    return opts, positional


def _check_command(script: str, argv: list[str], where: str) -> list[str]:
    path = BENCH / f"{script}.py"
    opts, positional = _options(path)
    problems, i = [], 0
    while i < len(argv):
        tok = argv[i]
        i += 1
        if not tok.startswith("--"):
            if positional and not any(tok in c for c in positional):
                problems.append(f"{where}: {script}.py: {tok!r} is not one of {positional}")
            continue
        flag, _, inline = tok.partition("=")
        if flag not in opts:
            problems.append(f"{where}: {script}.py has no option {flag}")
            continue
        nargs, choices, typ, takes_value = opts[flag]
        if not takes_value:
            continue
        if inline:
            values = [inline]
        elif isinstance(nargs, int):
            values, i = argv[i:i + nargs], i + nargs
        elif nargs in ("*", "+"):
            j = i
            while j < len(argv) and not argv[j].startswith("--"):
                j += 1
            values, i = argv[i:j], j
        else:
            values, i = argv[i:i + 1], i + 1
        for v in values:
            if flag == "--device" and v.split(":")[0] not in ("cpu", "cuda"):
                problems.append(f"{where}: {script}.py --device {v!r}: not cpu or cuda")
            if choices is not None and v not in choices:
                problems.append(f"{where}: {script}.py {flag} {v!r}: not one of {list(choices)}")
            if typ in ("int", "float") and not v.startswith("$"):
                try:
                    {"int": int, "float": float}[typ](v)
                except ValueError:
                    problems.append(f"{where}: {script}.py {flag} {v!r}: not an {typ}")
    return problems


_STOP = re.compile(r"\s(?:#|\||2>&1|>|;|&&)|`|\]|\)")


def _commands(text: str):
    """(script, argv) for every ``benchmarks/X.py ...`` command line in ``text`` (continuations joined)."""
    text = text.replace("\\\n", " ")
    for m in re.finditer(r'(?:python3?|"\$py")\s+benchmarks/(\w+)\.py([^\n]*)', text):
        rest = m.group(2)
        stop = _STOP.search(rest)
        rest = rest[: stop.start()] if stop else rest
        try:
            argv = shlex.split(rest)
        except ValueError:
            continue
        yield m.group(1), argv


def test_every_benchmark_option_the_docs_and_device_scripts_pass_exists():
    sources = [*BENCH.glob("*.sh"), *BENCH.glob("*.py"), BENCH / "README.md", REPO / "README.md",
               REPO / "Makefile", *(REPO / "docs").glob("*.md")]
    problems, seen = [], 0
    for src in sources:
        if not src.exists():
            continue
        where = src.relative_to(REPO).as_posix()
        for script, argv in _commands(src.read_text()):
            seen += 1
            if not (BENCH / f"{script}.py").exists():
                problems.append(f"{where}: benchmarks/{script}.py does not exist")
                continue
            problems += _check_command(script, argv, where)
    # the test files gpu_check.sh hands pytest (a missing one would stop the CUDA tests on the device)
    for path in re.findall(r"\btests/\w+\.py", (BENCH / "gpu_check.sh").read_text()):
        if not (REPO / path).exists():
            problems.append(f"benchmarks/gpu_check.sh: {path} does not exist")
    # device_packing.sh runs orchestration.py through runpy with its argv after "$py" -
    m = re.search(r'"\$py" - (.*?) \$\{ORCH_ARGS:-(\w+)\}', (BENCH / "device_packing.sh").read_text())
    assert m, "device_packing.sh: the orchestration.py call changed; update this test"
    problems += _check_command("orchestration", [*shlex.split(m.group(1)), m.group(2)], "device_packing.sh")
    assert seen >= 20, f"found only {seen} benchmark commands: the command scan broke"
    assert not problems, "\n".join(problems)


def test_the_option_check_catches_a_misspelled_or_wrong_choice():
    assert _check_command("attention", ["--device", "cuda", "--dtype", "bfloat16"], "x")
    assert _check_command("model", ["--only", "ssd", "stepp"], "x")
    assert _check_command("priors", ["--compiled"], "x")
    assert _check_command("priors", ["--device", "gpu"], "x")
    assert not _check_command("model", ["--device", "cuda", "--only", "ssd", "step", "--compile"], "x")


# ----------------------------------------------------------------------------- bad options: clear errors
def _ran_past_the_checks(*args, **kwargs):
    pytest.fail("the script started its work: the bad option was not caught first")


def _main_error(mod, argv: list[str], capsys, monkeypatch) -> str:
    monkeypatch.setattr(sys, "argv", [mod.__name__, *argv])
    with pytest.raises(SystemExit) as exc:
        mod.main()
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def metrics_bench():
    return _load(BENCH / "metrics.py", "bench_metrics")


@pytest.mark.parametrize("argv, match", [
    (["--shape", "1", "4", "1024"], "--shape: C = 4"),  # the ring FC graph is complete: no graph FD
    (["--shape", "1", "8", "128"], "--shape: T = 128"),
    (["--shape", "0", "8", "1024"], "--shape: B = 0"),
    (["--graph-shape", "2", "5"], "--graph-shape: B = 2, C = 5"),
    (["--repeat", "0"], "--repeat: needs >= 1"),
    (["--ref-repeat", "0"], "--ref-repeat: needs >= 1"),
    (["--threads", "-1"], "--threads: needs >= 1"),
])
def test_metrics_bad_options_stop_before_any_work(metrics_bench, capsys, monkeypatch, argv, match):
    monkeypatch.setattr(metrics_bench, "make_series", _ran_past_the_checks)  # a regression fails fast
    assert match in _main_error(metrics_bench, ["--device", "cpu", *argv], capsys, monkeypatch)


def test_metrics_speedup_below_10x_is_not_printed_as_0x(metrics_bench):
    assert metrics_bench._speedup(0.097) == "0.097x"
    assert metrics_bench._speedup(2.44) == "2.4x"
    assert metrics_bench._speedup(489.2) == "489x"


def test_priors_bad_repeat_is_a_clear_error(capsys, monkeypatch):
    priors = _load(BENCH / "priors.py", "bench_priors")
    monkeypatch.setattr(priors, "FractalPriors", _ran_past_the_checks)
    assert "--repeat: needs >= 1" in _main_error(priors, ["--repeat", "0"], capsys, monkeypatch)


def test_attention_bad_options_are_clear_errors(capsys, monkeypatch):
    attention = _load(BENCH / "attention.py", "bench_attention")
    monkeypatch.setattr(attention, "_time", _ran_past_the_checks)
    assert "--repeats: needs >= 1" in _main_error(attention, ["--device", "cpu", "--repeats", "0"], capsys, monkeypatch)
    if not torch.cuda.is_available():  # the CUDA-less machine: a clear error, not torch's AssertionError
        assert "--device cuda" in _main_error(attention, ["--device", "cuda"], capsys, monkeypatch)


def test_fingerprint_bench_bad_repeat_is_a_clear_error(capsys, monkeypatch):
    fp = _load(BENCH / "fingerprint.py", "bench_fingerprint")
    assert "--repeat: needs >= 1" in _main_error(fp, ["--repeat", "0"], capsys, monkeypatch)


def test_quickstart_zero_steps_is_a_clear_error(capsys, monkeypatch, tmp_path):
    qs = _load(REPO / "examples" / "fractals_quickstart.py", "example_quickstart")
    monkeypatch.setattr(qs, "measure_stimuli", _ran_past_the_checks)
    assert "--steps: needs >= 1" in _main_error(qs, ["--steps", "0", "--out", str(tmp_path)], capsys, monkeypatch)


# ----------------------------------------------------------------------------- model.py
@pytest.fixture(scope="module")
def model_bench():
    return _load(BENCH / "model.py", "bench_model_review")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine's error")
def test_model_cuda_without_cuda_is_a_clear_error(model_bench, capsys):
    with pytest.raises(SystemExit) as exc:
        model_bench.main(["--device", "cuda", "--only", "ssd"])
    assert exc.value.code == 2 and "--device cuda" in capsys.readouterr().err


def test_model_repeats_zero_is_a_clear_error(model_bench, capsys, monkeypatch):
    monkeypatch.setattr(model_bench, "bench_ssd", _ran_past_the_checks)
    with pytest.raises(SystemExit):
        model_bench.main(["--device", "cpu", "--only", "ssd", "--repeats", "0"])
    assert "--repeats: needs >= 1" in capsys.readouterr().err


def _arm(seed, lam, steps, loss, beta):
    return {"bench": "acceptance", "preset": "tiny", "seed": seed, "lambda_spec": lam, "steps": steps,
            "prior_opts": {}, "val_task_loss": loss, "latent_beta": beta, "fit_s": 1.0}


def test_model_one_seed_verdict_writes_strict_json(model_bench):
    v = model_bench.acceptance_verdict([(_arm(0, 0.0, 10, 2.0, 1.3), _arm(0, 0.05, 10, 2.0, 1.0))])
    json.dumps(v, allow_nan=False)  # NaN is not JSON: jq and JavaScript reject the file
    assert v["task_loss_ratio_sd"] is None and v["task_loss_ratio_se"] is None and v["pass"]


def test_model_final_out_keeps_arms_of_earlier_runs(model_bench, tmp_path):
    """A 300-step run, then a 600-step run into the same --out: the 300-step arms (minutes each) stay."""
    out = tmp_path / "acc.json"
    earlier = [_arm(0, 0.0, 300, 3.0, 1.3), _arm(0, 0.05, 300, 3.1, 0.9)]
    now = [_arm(0, 0.0, 600, 2.0, 1.3), _arm(0, 0.05, 600, 2.0, 1.0)]
    out.write_text(json.dumps({"rows": earlier + now}))
    model_bench._fit_arm = None  # every arm of this run comes from the file: nothing trains
    model_bench.main(["--device", "cpu", "--quick", "--only", "acceptance", "--acceptance-steps", "600",
                      "--seeds", "1", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert sorted(r["steps"] for r in rows if "seed" in r) == [300, 300, 600, 600]
    assert [r for r in rows if "verdict" in r][0]["steps"] == 600
