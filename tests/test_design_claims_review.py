"""docs/design_claims.md cannot rot silently: every file, test and benchmark it cites as evidence exists, every
status is one of the ledger's own, and every seed document in ../shared/seeds has its section (skipped with a
reason when ../shared is absent)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LEDGER = REPO / "docs" / "design_claims.md"
SEEDS = (REPO.parent / "shared" / "seeds").resolve()
PATH_ROOTS = ("tests/", "benchmarks/", "docs/", "fractals/", "models/", "platform/", "sweeps/", "examples/",
              "helm/", "terraform/", "infra/", "docker/")
STATUSES = ("measured: holds", "measured: does not hold", "measured: partly", "built and tested", "not built",
            "needs a GPU", "not checkable")
TEST_NAME = re.compile(r"test_\w+")


def _blocks(text: str) -> list[str]:
    """Table rows one by one, other text by paragraph; fenced code blocks left out (commands, not citations)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    blocks, para = [], []
    for line in text.splitlines():
        if line.startswith("|") or not line.strip():
            if para:
                blocks.append("\n".join(para))
                para = []
            if line.startswith("|"):
                blocks.append(line)
        else:
            para.append(line)
    if para:
        blocks.append("\n".join(para))
    return blocks


def _defines(test_file: Path, name: str) -> bool:
    return re.search(rf"^\s*def {re.escape(name)}\(", test_file.read_text(encoding="utf-8"), re.M) is not None


def citation_problems(text: str, repo: Path = REPO) -> tuple[list[str], int, int]:
    """(problems, paths checked, test names checked) for the citations in ``text``.

    A backticked token under a repository folder (``tests/test_x.py``, ``benchmarks/y.py``, ``docs/z.md``) must
    exist; ``tests/test_x.py::test_name`` and a backticked ``test_name`` after ``tests/test_x.py`` in the same table
    row or paragraph must be a test defined in that file.
    """
    problems, n_paths, n_tests = [], 0, 0
    for block in _blocks(text):
        test_file = None
        for span in re.findall(r"`([^`\n]+)`", block):
            if TEST_NAME.fullmatch(span):
                n_tests += 1
                if test_file is None:
                    problems.append(f"{span}: a test name with no tests/ file before it in its row or paragraph")
                elif not _defines(repo / test_file, span):
                    problems.append(f"{test_file}::{span}: no such test")
                continue
            for token in re.split(r"[\s,;()=]+", span):
                token = token.strip(".:\"'")
                path, _, name = token.partition("::")
                if not path.startswith(PATH_ROOTS) or re.search(r"[<>*{}|$]|\.\.\.", path):
                    continue
                n_paths += 1
                if not (repo / path).exists():
                    problems.append(f"{path}: no such file or folder")
                    continue
                if path.startswith("tests/") and path.endswith(".py"):
                    test_file = path
                    if name:
                        n_tests += 1
                        if not _defines(repo / path, name):
                            problems.append(f"{path}::{name}: no such test")
    return problems, n_paths, n_tests


def _ledger() -> str:
    return LEDGER.read_text(encoding="utf-8")


def test_every_cited_file_benchmark_and_test_exists():
    _check_that_the_checker_reports_a_missing_file_a_missing_test_and_an_orphan_test_name()
    problems, n_paths, n_tests = citation_problems(_ledger())
    # a parser that finds nothing would pass vacuously: the ledger cites well over these counts
    assert n_paths > 100 and n_tests > 100, (n_paths, n_tests)
    assert problems == []


def _check_that_the_checker_reports_a_missing_file_a_missing_test_and_an_orphan_test_name():
    text = ("| 1 | x | built and tested | `tests/test_design_claims_review.py` `test_no_such_test_here`, "
            "`benchmarks/no_such_script.py` |\n\n`test_every_cited_file_benchmark_and_test_exists` alone\n\n"
            "`tests/test_design_claims_review.py::test_every_cited_file_benchmark_and_test_exists` and "
            "`tests/test_design_claims_review.py::test_missing_too`\n")
    problems, _, _ = citation_problems(text)
    assert problems == [
        "tests/test_design_claims_review.py::test_no_such_test_here: no such test",
        "benchmarks/no_such_script.py: no such file or folder",
        "test_every_cited_file_benchmark_and_test_exists: a test name with no tests/ file before it in its row "
        "or paragraph",
        "tests/test_design_claims_review.py::test_missing_too: no such test",
    ]


def test_every_claim_row_has_a_known_status_and_a_unique_id():
    rows = [line for line in _ledger().splitlines() if re.match(r"\| \d{3}-\d{2} \|", line)]
    assert len(rows) > 100
    ids = [row.split("|")[1].strip() for row in rows]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    bad = [row[:60] for row in rows if not row.split("|")[3].strip().startswith(STATUSES)]
    assert bad == []


def test_every_seed_document_has_its_section():
    if not SEEDS.is_dir():
        pytest.skip(f"seed documents not found at {SEEDS} (../shared/seeds beside the checkout)")
    seeds = sorted(p.name for p in SEEDS.glob("*.txt"))
    assert seeds, f"no seed documents in {SEEDS}"
    headings = [line for line in _ledger().splitlines() if line.startswith("## ")]
    missing = [s for s in seeds if not any(line.startswith(f"## {s}") for line in headings)]
    assert missing == []
    # and each section's rows carry its own number, so rows cannot drift under the wrong document
    for seed in seeds:
        number = seed[:3]
        section = _ledger().split(f"## {seed}", 1)[1].split("\n## ", 1)[0]
        ids = re.findall(r"^\| (\d{3})-\d{2} \|", section, re.M)
        assert ids and set(ids) == {number}, (seed, sorted(set(ids)))
