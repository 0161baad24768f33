"""docker-compose.yml: the services the issue names, with commands the CLI really accepts."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _vlarft_command():
    from cli import main

    main._register()
    return typer.main.get_command(main.app)


def test_services_and_their_commands_parse():
    services = _compose()["services"]
    assert {"postgres", "redis", "api", "worker-sim", "worker-gpu", "flower"} <= set(services)
    cli = _vlarft_command()
    for name in ("api", "worker-sim", "worker-gpu"):
        cmd = services[name]["command"]
        assert cmd[0] == "vlarft", name
        sub = cli.get_command(None, cmd[1])
        assert sub is not None, f"{name}: vlarft has no command {cmd[1]}"
        sub.make_context(f"vlarft {cmd[1]}", list(cmd[2:]))  # raises on an unknown option or bad value
    assert services["flower"]["command"][:3] == ["celery", "-A", "workers.app"]


def test_every_studio_service_shares_database_broker_and_artifacts():
    services = _compose()["services"]
    for name in ("api", "worker-sim", "worker-gpu", "flower"):
        env = services[name]["environment"]
        assert env["VLARFT_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["VLARFT_BROKER_URL"] == "redis://redis:6379/0"
        assert env["VLARFT_ARTIFACT_DIR"] == "/data/artifacts"
        assert "artifacts:/data/artifacts" in services[name]["volumes"]


def test_gpu_worker_is_pinned_to_one_gpu():
    gpu = _compose()["services"]["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}]
    assert gpu["environment"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert gpu["command"][gpu["command"].index("--queues") + 1] == "train"


def test_the_image_holds_every_package():
    docker = (ROOT / "Dockerfile").read_text()
    for package in ("cli", "sim", "models", "workers", "backend", "frontend"):
        assert f"COPY {package} {package}" in docker
