"""A scratch copy of the repository for end-to-end runs of the real `dvc` CLI (the pipeline
tests, the GPU check's rehearsal), and the presets as overlays on `params.yaml`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ("metrics", "dvclive", "dvclive_distill", "data", "models")  # the committed demo's
NOT_COPIED = (".git", ".venv", ".anchors", ".cache", "out", "__pycache__")  # at any depth


def merge(base: dict, update: dict) -> dict:
    """`base` with `update`'s values, nested sections merged key by key."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return out


def preset(*names: str) -> dict[str, Any]:
    """Parameters: a complete file (`params.yaml`, `presets/full.yaml`) followed by overlays
    (`presets/tiny.yaml`, `presets/rehearsal.yaml`), each merged over the last."""
    params: dict[str, Any] = {}
    for name in names:
        params = merge(params, yaml.safe_load((ROOT / name).read_text()))
    return params


def project_files() -> list[str]:
    """The project's own files: what git tracks or would (everything but data, caches and
    environments where the checkout has no git)."""
    if shutil.which("git") and (ROOT / ".git").exists():
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        return [f for f in listed if (ROOT / f).is_file() and f.split("/")[0] not in RESULTS]
    files = (p.relative_to(ROOT) for p in ROOT.rglob("*") if p.is_file())
    return [
        f.as_posix()
        for f in files
        if f.parts[0] not in RESULTS and not set(f.parts) & set(NOT_COPIED)  # not spade/metrics
    ]


def scratch_repo(dest: Path, params: dict[str, Any]) -> Path:
    """The project copied into `dest` without results (no data, models, metrics, lock), with
    `params` as its params.yaml, as a git repository of one commit (dvclive wants one)."""
    for rel in project_files():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    (dest / "dvc.lock").unlink(missing_ok=True)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if shutil.which("git"):
        git = ["git", "-c", "user.name=scratch", "-c", "user.email=scratch@localhost"]
        for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "scratch"]):
            subprocess.run([*git, *cmd], cwd=dest, check=True, capture_output=True)
    else:
        subprocess.run(
            ["dvc", "config", "core.no_scm", "true"], cwd=dest, check=True, env=dvc_env(dest)
        )
    return dest


def dvc_env(repo: Path, **more: str) -> dict[str, str]:
    """The environment for `dvc` in a scratch repo: this Python's tools first, the repo's code
    importable, no analytics, a roughen cache of its own."""
    return (
        os.environ
        | {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": os.pathsep.join(
                [str(repo), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "SPADE_ROUGHEN_CACHE": str(repo / ".cache/roughen"),
            "DVC_NO_ANALYTICS": "1",
        }
        | more
    )
