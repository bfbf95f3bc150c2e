"""`dvc.yaml` declares exactly what each stage reads: its code (the import closure of its script
inside `spade/`, lazy imports included) and the params that can change its outputs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from spade.config import Params

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _module_file(module: str) -> Path | None:
    """spade.a.b → spade/a/b.py or spade/a/b/__init__.py (None outside the package)."""
    parts = module.split(".")
    if parts[0] != "spade":
        return None
    base = ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path) -> set[str]:
    """Every `spade…` module a file imports, anywhere in it, with their parent packages."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # submodules, if any
    with_parents = set()
    for module in found:
        parts = module.split(".")
        with_parents |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return with_parents


def import_closure(script: Path) -> set[str]:
    """Files of `spade/` that running `script` can import, as paths relative to the repo."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for module in _imported_modules(todo.pop()):
            file = _module_file(module)
            if file is not None and file not in seen:
                seen.add(file)
                todo.append(file)
    return {f.relative_to(ROOT).as_posix() for f in seen}


def declared_code(stage: dict) -> set[str]:
    """The stage's `spade/` deps, folders expanded to their .py files."""
    files: set[str] = set()
    for dep in stage.get("deps", []):
        path = ROOT / dep
        if dep.startswith("spade/") and path.is_dir():
            files |= {p.relative_to(ROOT).as_posix() for p in path.rglob("*.py")}
        elif dep.startswith("spade/"):
            files.add(dep)
    return files


def script_of(stage: dict) -> Path:
    cmd = stage["cmd"].split("#")[0].split()
    return ROOT / next(word for word in cmd if word.endswith(".py"))


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_the_import_closure(name):
    stage = STAGES[name]
    script = script_of(stage)
    assert script.relative_to(ROOT).as_posix() in stage["deps"]
    assert declared_code(stage) == import_closure(script)


def output_params(section: str) -> list[str]:
    """What a stage that reads `section` must list: the whole section, or its keys that can
    change an output (nested models as one entry, e.g. `roughen.recipe`)."""
    model = getattr(Params(), section)
    if not model.SPEED_KEYS:
        return [section]
    return [f"{section}.{k}" for k in type(model).model_fields if k not in model.SPEED_KEYS]


# The sections each stage reads (the code is the truth; this table mirrors stages/*.py).
READS = {
    "params": [],
    "demo": ["demo"],
    "sample": ["sample"],
    "roughen": ["roughen"],
    "train": ["train", "roughen.recipe"],
    "features": ["features"],
    "evaluate": ["evaluate", "features"],
}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_params_are_exactly_the_output_keys(name):
    expected: list[str] = []
    for section in READS[name]:
        expected += [section] if "." in section else output_params(section)
    assert sorted(STAGES[name].get("params", [])) == sorted(expected)


def test_speed_keys_are_not_dependencies():
    deps = {p for stage in STAGES.values() for p in stage.get("params", [])}
    for key in ("roughen.n_jobs", "roughen.batch_size", "train.num_workers", "train.log_every"):
        assert key not in deps
    assert {"train.arch", "train.disc", "train.lr_g", "roughen.recipe"} <= deps
