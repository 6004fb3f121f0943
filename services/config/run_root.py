"""Where runs land by default (`run.root`): a path that outlives the process and the Ray cluster.

    $CRLHF_RUNS                          when set
    ~/crlhf-runs                         when the process runs inside Ray's temporary working directory
                                         (`ray job submit --working-dir .` unpacks the code under
                                         .../runtime_resources/working_dir_files/_ray_pkg_<hash>/, which Ray
                                         deletes with the cluster)
    ./runs, made absolute                otherwise (what `crlhf status` and the README assume)

No imports beyond the standard library: the CLI uses it to find runs without loading the config schema.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

RUNS_ENV = "CRLHF_RUNS"


def in_ray_working_dir(path: Path) -> bool:
    return any(part == "runtime_resources" or part.startswith("_ray_pkg_") for part in path.parts)


def default_runs_root(cwd: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(RUNS_ENV):
        return absolute(Path(env[RUNS_ENV]), cwd)
    here = Path.cwd() if cwd is None else cwd
    if in_ray_working_dir(here):
        return Path.home() / "crlhf-runs"
    return absolute(Path("runs"), here)


def absolute(path: Path, cwd: Path | None = None) -> Path:
    """`~` expanded and made absolute against cwd (not resolved: a symlinked runs/ keeps the name users gave)."""
    path = path.expanduser()
    return path if path.is_absolute() else (Path.cwd() if cwd is None else cwd) / path
