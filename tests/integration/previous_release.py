"""The previous release, built from the git history: its sources at
PREVIOUS_RELEASE (``git archive``) installed with pip into a folder of their
own, so its code runs in a subprocess (PYTHONPATH first) beside this one."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# autoembed 0.1.0: the last commit before versions side by side (0.2.0).
PREVIOUS_RELEASE = ("0.1.0", "a7523124a2086f9e629b1cea1b7b7b2e080b74da")


class PreviousRelease:
    def __init__(self, version: str, site: Path) -> None:
        self.version = version
        self.site = site

    def run(self, script: str, *args: str) -> str:
        """Run ``script`` with the previous release's autoembed importable
        (it checks that it got that one); returns its stdout."""
        env = dict(os.environ, PYTHONPATH=str(self.site))
        check = (
            "import autoembed\n"
            f"assert autoembed.__version__ == {self.version!r}, autoembed.__file__\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", check + script, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode:
            raise AssertionError(f"previous release script failed:\n{done.stderr[-3000:]}")
        return done.stdout


def build(dest: Path) -> PreviousRelease:
    """Build PREVIOUS_RELEASE into ``dest`` (cached there between calls)."""
    version, commit = PREVIOUS_RELEASE
    site = dest / f"autoembed-{version}-{commit[:12]}"
    if (site / ".built").exists():
        return PreviousRelease(version, site)
    has = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True
    )
    if has.returncode:
        raise AssertionError(
            f"autoembed {version} is built from the git history (commit {commit}), which this "
            "checkout lacks: test from a full clone (git fetch --unshallow)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "src.tar"
        with archive.open("wb") as out:
            subprocess.run(["git", "-C", str(REPO), "archive", commit], stdout=out, check=True)
        src = Path(tmp) / "src"
        with tarfile.open(archive) as tar:
            tar.extractall(src, filter="data")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--target",
                str(site),
                str(src),
            ],
            check=True,
            capture_output=True,
        )
    (site / ".built").touch()
    return PreviousRelease(version, site)
