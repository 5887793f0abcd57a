"""The layout decided in DEVELOPERS.md: three import packages, dependencies pointing one way."""
import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _imported_top_levels(folder: Path) -> set[str]:
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_platform_is_not_a_package():
    assert not (REPO / "platform" / "__init__.py").exists()
    import platform

    assert platform.__file__.startswith(sys.base_prefix) or "python3" in platform.__file__


def test_dependencies_point_one_way():
    assert not {"models", "fmx"} & _imported_top_levels(REPO / "fractals")
    assert "fmx" not in _imported_top_levels(REPO / "models")


def test_fractals_needs_only_torch_numpy_scipy():
    allowed_heavy = {"matplotlib", "pandas"}  # plotting and fingerprint tables import these lazily
    imported = _imported_top_levels(REPO / "fractals") - set(sys.stdlib_module_names) - {"fractals"}
    assert imported <= {"torch", "numpy", "scipy", "triton"} | allowed_heavy, imported
