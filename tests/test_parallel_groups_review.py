"""`make test` runs pytest-xdist workers: every test that starts Ray or a server must stay in one group.

Two Ray sweeps side by side on CI's 2 cores double each other's start-up, and a module fixture's Ray head would
start once per worker. These tests read the rule in tests/conftest.py against the test modules themselves.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import conftest

TESTS = Path(__file__).resolve().parent
# Ways a test module starts a Ray of its own (the session's shared head comes in through the ray_cluster fixture).
STARTS_RAY = re.compile(r'"start", "--head"|start_ray_head\(|ray\.init\(|init_ray\(')


def test_every_module_that_starts_its_own_ray_runs_in_the_serial_group():
    starters = {p.stem for p in TESTS.glob("test_*.py") if STARTS_RAY.search(p.read_text(encoding="utf-8"))}
    starters.discard(Path(__file__).stem)
    assert starters, "the pattern no longer finds the modules that start Ray"
    missing = sorted(starters - conftest.RAY_MODULES)
    assert not missing, f"add these modules to RAY_MODULES in tests/conftest.py: {missing}"
    gone = sorted(m for m in conftest.RAY_MODULES if not (TESTS / f"{m}.py").exists())
    assert not gone, f"RAY_MODULES names modules that no longer exist: {gone}"


def test_slow_tests_server_fixtures_and_ray_modules_get_the_group_mark_and_others_do_not(pytester):
    # A module name of its own: a real one (test_env_targets) may be imported in this process already.
    pytester.makeconftest((TESTS / "conftest.py").read_text(encoding="utf-8").replace(
        'pytest_plugins = ["fixtures_servers", "pytester"]', "") + '\nRAY_MODULES = RAY_MODULES | {"test_own_ray"}\n')
    pytester.makepyfile(test_plain="""
        import pytest

        @pytest.fixture
        def ray_cluster():
            return None

        def test_cpu():
            pass

        @pytest.mark.slow
        def test_marked_slow():
            pass

        def test_uses_the_shared_head(ray_cluster):
            pass
    """)
    pytester.makepyfile(test_own_ray="def test_anything_in_a_ray_module():\n    pass\n")
    items, _ = pytester.inline_genitems("-m", "slow or not slow")
    grouped = {item.name: [m.args for m in item.iter_markers("xdist_group")] for item in items}
    group = [(conftest.SERIAL_GROUP,)]
    assert grouped == {"test_cpu": [], "test_marked_slow": group, "test_uses_the_shared_head": group,
                       "test_anything_in_a_ray_module": group}


def test_xdist_keeps_a_group_in_one_worker_with_its_module_fixture_set_up_once(pytester):
    # pytest 9.2 with pytest-xdist 3.8 dropped the group silently (pytest-dev/pytest-xdist#1386): the Ray tests ran
    # on both workers at once and the DDP review's module fixture twice. pyproject.toml pins pytest below 9.2.
    log = pytester.path / "setups.txt"
    module = f"""
        import os, pytest

        pytestmark = pytest.mark.xdist_group("g")

        @pytest.fixture(scope="module")
        def once():
            with open({str(log)!r}, "a") as fh:
                fh.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")

        def test_a(once): pass
        def test_b(once): pass
        def test_c(once): pass
    """
    pytester.makepyfile(test_g1=module, test_g2=module,
                        **{f"test_cpu{i}": "\n".join(f"def test_{j}(): pass" for j in range(20)) for i in range(4)})
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=86)
    setups = log.read_text().split()
    assert len(setups) == 2 and len(set(setups)) == 1, setups


@pytest.mark.parametrize("target", ["test"])
def test_make_test_spreads_over_workers_in_groups(target):
    makefile = (TESTS.parent / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]
    assert "-n $(TEST_WORKERS)" in recipe and "--dist loadgroup" in recipe, recipe


def test_fmx_ui_run_in_process_puts_the_signal_handlers_back(tmp_path, monkeypatch):
    # Was: `ui` left its SIGTERM/SIGHUP handler (stop its server) installed after it returned; a test that ran it
    # in-process with a stand-in server made a later test's SIGTERM fail in the same xdist worker
    # ("'Server' object has no attribute 'terminate'").
    import signal
    import subprocess

    from typer.testing import CliRunner

    from fmx.cli import app

    class Server:
        def wait(self, timeout=None):
            return 0

    def mine(signum, frame):
        pass

    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: Server())
    before = {signal.SIGTERM: signal.getsignal(signal.SIGTERM), signal.SIGHUP: signal.getsignal(signal.SIGHUP)}
    try:
        signal.signal(signal.SIGHUP, mine)
        res = CliRunner().invoke(app, ["ui", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
        assert res.exit_code == 0, res.output
        assert signal.getsignal(signal.SIGTERM) is before[signal.SIGTERM]
        assert signal.getsignal(signal.SIGHUP) is mine
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
