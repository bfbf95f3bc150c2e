"""`dvc.yaml` declares exactly what each stage reads: its code (the import closure of its script
inside `spade/`, lazy imports included) and the params sections it reads, all but `run` (the
speed and logging keys, each shown here to change no output)."""

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


RUN = "run"  # the section of speed and logging keys: no stage depends on it

# Where each key of `run` is shown to change no byte of any output: the rule that keeps it out
# of every stage's dependencies. A key added to `run` needs such a test here.
DASK = "test_roughen.py::test_dask_cluster_gives_the_same_bytes_and_fills_the_cache"
RUN_KEYS_PROVEN_BY = {
    "demo.n_jobs": "test_synthetic.py::test_parallel_drawing_gives_the_same_zip",
    "roughen.backend": "test_roughen.py::test_torch_engine_equals_opencv_and_shares_the_cache",
    "roughen.n_jobs": "test_roughen.py::test_parallel_equals_serial_and_keeps_order",
    "roughen.batch_size": DASK,  # batches of 2 against the local run's 32
    "roughen.scheduler": DASK,
    **{
        f"{loop}.{key}": "test_train.py::test_run_keys_change_no_byte_of_the_model"
        for loop in ("train", "distill")  # one loop (`spade.train.fit`) reads both
        for key in ("num_workers", "log_every", "ckpt_every", "n_samples")
    },
}


def sections_read(script: Path) -> set[str]:
    """The params sections a stage script reads, found in its code: `<params>.<section>` where
    `<params>` is `load_params()` or a name bound to it."""
    tree = ast.parse(script.read_text())
    bound = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and _is_load_params(node.value)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and (
            _is_load_params(node.value)
            or (isinstance(node.value, ast.Name) and node.value.id in bound)
        )
    }


def _is_load_params(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_params"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_params_are_the_whole_sections_read_but_run(name):
    """Every key of a stage's section can change an output, so a stage depends on each section
    it reads, whole; `run` holds the keys that cannot, and is nobody's dependency."""
    read = sections_read(script_of(STAGES[name]))
    assert read <= set(Params.model_fields), read
    assert sorted(STAGES[name].get("params", [])) == sorted(read - {RUN})


def test_every_run_key_is_shown_to_change_no_output():
    assert set(Params().run.flat()) == set(RUN_KEYS_PROVEN_BY)
    for proof in set(RUN_KEYS_PROVEN_BY.values()):
        file, test = proof.split("::")
        assert f"def {test}(" in (ROOT / "tests" / file).read_text(), proof


def test_speed_keys_are_not_dependencies():
    deps = {p for stage in STAGES.values() for p in stage.get("params", [])}
    assert not {p for p in deps if p.split(".")[0] == RUN}
    assert {"train", "distill", "roughen", "cpu"} <= deps


@pytest.mark.slow  # of the workspace, not the code: it fails every edit loop until `dvc repro`
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
