"""Shared fixtures: where the shipped instances live and how to load them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTANCES_DIR = REPO_ROOT / "instances"

# Run from a checkout without `pip install -e .` too.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels():
    """Compile (or load from numba's cache) every simulator kernel once, before any test.

    On a machine with an empty cache the first compile takes tens of seconds; without this it
    would fall inside whichever test came first, and a test with a time limit would measure the
    compiler, not the solver."""
    from rtopt.model.simulator import compile_kernels

    compile_kernels()
    yield


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def instances_dir() -> Path:
    """The repository's ``instances/`` directory."""
    return INSTANCES_DIR


@pytest.fixture(scope="session")
def instance_files() -> list[Path]:
    """Every shipped instance file, sorted."""
    return sorted(INSTANCES_DIR.glob("*.toml"))


@pytest.fixture(scope="session")
def load():
    """Load a shipped instance by name (``load("prostate-sbrt")``) or by path."""
    from rtopt.problem.instance import load_instance

    def _load(name_or_path):
        path = Path(name_or_path)
        if not path.suffix:
            path = INSTANCES_DIR / f"{name_or_path}.toml"
        return load_instance(path)

    return _load


@pytest.fixture(scope="session")
def load_dict():
    """Read a shipped instance file as a plain dict (for building invalid variants)."""
    import tomllib

    def _load_dict(name: str) -> dict:
        with open(INSTANCES_DIR / f"{name}.toml", "rb") as fh:
            return tomllib.load(fh)

    return _load_dict
