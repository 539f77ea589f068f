"""docker/: the Compose stack and the images hang together.

No Docker engine is needed: compose.yaml is read with PyYAML and checked for
the facts that matter. Where the ``docker compose`` CLI is installed, it
also validates the file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"
COMPOSE = DOCKER / "compose.yaml"
AUTOEMBED_IMAGES = ("autoembed-worker", "autoembed-worker-cuda")
WORKERS = ("worker", "worker-gpu")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))  # resolves << merge keys
    assert doc["name"] == "autoembed"
    result: dict[str, Any] = doc["services"]
    return result


def _runs_autoembed(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).split(":")[0] in AUTOEMBED_IMAGES


def _depends(service: dict[str, Any], on: str) -> str | None:
    condition: str | None = service.get("depends_on", {}).get(on, {}).get("condition")
    return condition


def test_the_stack_has_every_service(services: dict[str, Any]) -> None:
    assert set(services) == {
        "postgres",
        "redis",
        "install",
        "dispatcher",
        "worker",
        "worker-gpu",
        "flower",
    }
    autoembed = {name for name, s in services.items() if _runs_autoembed(s)}
    assert autoembed == {"install", "dispatcher", "worker", "worker-gpu", "flower"}
    assert services["install"]["command"] == ["install"]
    assert services["dispatcher"]["command"] == ["dispatcher"]
    assert services["worker"]["command"][0] == "worker"
    assert services["flower"]["entrypoint"] == ["celery"]
    assert services["flower"]["command"][:3] == ["-A", "autoembed.worker.app", "flower"]


def test_every_autoembed_service_knows_the_database_and_the_broker(
    services: dict[str, Any],
) -> None:
    for name, service in services.items():
        if not _runs_autoembed(service):
            continue
        env = service["environment"]
        assert "@postgres:5432/" in env["AUTOEMBED_DATABASE_URL"], name
        assert env["AUTOEMBED_BROKER_URL"].startswith("redis://redis:6379/"), name


def test_workers_leave_dispatching_to_the_dispatcher(services: dict[str, Any]) -> None:
    for name in WORKERS:
        assert services[name]["environment"]["AUTOEMBED_DISPATCHER"] == "0", name
    assert services["dispatcher"]["environment"].get("AUTOEMBED_DISPATCHER", "1") != "0"


def test_start_order(services: dict[str, Any]) -> None:
    assert "healthcheck" in services["postgres"]
    assert "healthcheck" in services["redis"]
    assert _depends(services["install"], "postgres") == "service_healthy"
    assert services["install"]["restart"] == "no"
    for name in (*WORKERS, "dispatcher"):
        assert _depends(services[name], "install") == "service_completed_successfully", name
        assert _depends(services[name], "redis") == "service_healthy", name


def test_gpu_worker_reserves_nvidia_gpus(services: dict[str, Any]) -> None:
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["dockerfile"] == "docker/worker-cuda.Dockerfile"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert "profiles" not in services["worker"]


def test_the_dockerfiles_exist_and_copy_what_exists(services: dict[str, Any]) -> None:
    built = {s["build"]["dockerfile"] for s in services.values() if "build" in s}
    assert built == {
        "docker/postgres.Dockerfile",
        "docker/worker.Dockerfile",
        "docker/worker-cuda.Dockerfile",
    }
    for service in services.values():
        if "build" not in service:
            continue
        context = (DOCKER / service["build"]["context"]).resolve()
        dockerfile = context / service["build"]["dockerfile"]
        assert dockerfile.is_file(), dockerfile
        text = dockerfile.read_text(encoding="utf-8")
        for src in re.findall(r"^COPY (?!--from)(\S+)", text, re.MULTILINE):
            assert (context / src).exists(), f"{dockerfile.name} copies missing {src}"
        # BuildKit's per-Dockerfile ignore file keeps .venv/ out of the context:
        # it ignores everything, then lets in what the image needs.
        ignore = dockerfile.with_name(dockerfile.name + ".dockerignore").read_text("utf-8")
        rules = [r for r in ignore.splitlines() if r.strip() and not r.startswith("#")]
        assert rules[0] == "*"
        assert not any(".venv" in r for r in rules)


def test_images_are_built_as_documented() -> None:
    postgres = (DOCKER / "postgres.Dockerfile").read_text(encoding="utf-8")
    assert "ARG PG_IMAGE=pgvector/pgvector:pg" in postgres
    assert "autoembed extension-files --out" in postgres
    cpu = (DOCKER / "worker.Dockerfile").read_text(encoding="utf-8")
    assert "FROM python:3.11-slim" in cpu
    assert "--index-url https://download.pytorch.org/whl/cpu" in cpu
    assert "ARG TORCH_VERSION=2.13.0" in cpu
    cuda = (DOCKER / "worker-cuda.Dockerfile").read_text(encoding="utf-8")
    assert "ARG CUDA_IMAGE=nvidia/cuda:" in cuda
    assert "https://download.pytorch.org/whl/cu" in cuda
    for text in (cpu, cuda):
        assert 'pip install ".[model]"' in text
        assert 'ENTRYPOINT ["autoembed"]' in text
        assert 'CMD ["worker"]' in text


def test_docker_compose_accepts_the_file() -> None:
    docker = shutil.which("docker")
    # Only where the Compose plugin is installed (not on every CI machine).
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        for profile in ([], ["--profile", "gpu"]):
            result = subprocess.run(
                [docker, "compose", "-f", str(COMPOSE), *profile, "config", "-q"],
                capture_output=True,
                text=True,
            )
            assert result.returncode == 0, result.stderr
