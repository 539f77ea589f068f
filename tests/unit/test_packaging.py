"""The wheel carries the whole product: library, worker, SQL and migrations."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path


def _sources(root: Path, folder: str, pattern: str) -> set[str]:
    return {p.relative_to(root / folder).as_posix() for p in (root / folder).rglob(pattern)}


def test_wheel_contains_sql_migrations_and_worker(repo_root: Path, tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(repo_root),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("autoembed-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    for sql in _sources(repo_root, "extension_sql", "*.sql"):
        assert f"autoembed/extension_sql/{sql}" in names
    for rev in _sources(repo_root, "migrations", "*.py"):
        assert f"autoembed/migrations/{rev}" in names
    assert "autoembed/migrations/script.py.mako" in names
    for mod in _sources(repo_root, "worker", "*.py"):
        assert f"autoembed/worker/{mod}" in names
    for mod in _sources(repo_root, "src/autoembed/evaluation", "*.py"):
        assert f"autoembed/evaluation/{mod}" in names
    assert "autoembed/examples/scifact_demo.jsonl" in names
    assert "autoembed/py.typed" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "autoembed = autoembed.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
