"""`dvc.yaml` declares exactly what each stage reads: its code (the import closure of its script
inside `spade/`, lazy imports included) and the params that can change its outputs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

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


def sections_read(script: Path) -> set[str]:
    """The params a stage script reads, found in its code: `<params>.<section>` where `<params>`
    is `load_params()` or a name bound to it; `<params>.<section>.<nested section>` reads only
    the nested section (`params.roughen.recipe`), unless the whole section is read too."""
    tree = ast.parse(script.read_text())
    bound = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and _is_load_params(node.value)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    read = set()
    for node in ast.walk(tree):
        params = node.value if isinstance(node, ast.Attribute) else None
        if params is None or not (
            _is_load_params(params) or (isinstance(params, ast.Name) and params.id in bound)
        ):
            continue
        parent = parents.get(id(node))
        nested = parent.attr if isinstance(parent, ast.Attribute) else None
        read.add(f"{node.attr}.{nested}" if _is_model(node.attr, nested) else node.attr)
    return {r for r in read if "." not in r or r.split(".")[0] not in read}


def _is_load_params(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_params"


def _is_model(section: str, key: str | None) -> bool:
    """Whether `<section>.<key>` is a nested section (a model, not a value)."""
    field = Params.model_fields[section].annotation.model_fields.get(key or "")
    annotation = field.annotation if field is not None else None
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_params_are_exactly_the_output_keys(name):
    expected: list[str] = []
    for section in sections_read(script_of(STAGES[name])):
        expected += [section] if "." in section else output_params(section)
    assert sorted(STAGES[name].get("params", [])) == sorted(expected)


def test_speed_keys_are_not_dependencies():
    deps = {p for stage in STAGES.values() for p in stage.get("params", [])}
    for key in ("roughen.n_jobs", "roughen.batch_size", "train.num_workers", "train.log_every"):
        assert key not in deps
    assert {"train.arch", "train.disc", "train.lr_g", "roughen.recipe"} <= deps


def test_the_committed_lock_describes_the_committed_code():
    """`dvc status` names no changed code or params dependency: the metrics in git are those of
    the code in git (a code change needs `dvc repro` before its commit). Data that a fresh clone
    lacks (not pulled) is not a change of this kind."""
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    stale = [
        f"{stage}: {path}"
        for stage, changes in json.loads(proc.stdout or "{}").items()
        for change in changes
        if isinstance(change, dict)
        for path, what in change.get("changed deps", {}).items()
        if what == "modified" and (path.endswith(".py") or path.startswith(("params", "spade/")))
    ]
    assert not stale, f"dvc.lock is older than the code: run `dvc repro` and commit it: {stale}"
