"""docker-compose.yml and deploy/Dockerfile: valid, complete, and wired to the daemon's real settings.

No Docker engine exists where these run: `docker-compose config` validates and merges the files, the
tests check what the merged model says. The image build itself is not exercised (docs/deploy.md).
"""

from __future__ import annotations

import re
from pathlib import Path

from deploy_files import COMPOSE_FILE, DEPLOY, EXAMPLE_CONFIG, PROMETHEUS_CONFIG, REPO, compose_config

DOCKERFILE = DEPLOY / "Dockerfile"
GPU = "deploy/compose/gpu.yml"
PULSEAUDIO = "deploy/compose/pulseaudio.yml"
PULSE_ENV = {"XDG_RUNTIME_DIR": "/run/user/1000", "HOME": "/home/someone"}


def bind_sources(service: dict) -> list[Path]:
    """Host paths a service bind-mounts (named volumes left out)."""
    sources = []
    for volume in service.get("volumes", []):
        source = volume["source"] if isinstance(volume, dict) else volume.split(":", 1)[0]
        if source.startswith("/"):
            sources.append(Path(source))
    return sources


def test_compose_file_and_its_overrides_are_valid():
    for overrides, env in (((), {}), ((GPU,), {}), ((PULSEAUDIO,), PULSE_ENV)):
        model = compose_config(*overrides, env=env)
        assert {"roomtone", "prometheus", "grafana"} <= set(model["services"]), overrides


def test_every_repository_file_the_stack_mounts_or_builds_from_exists():
    model = compose_config()
    checked = 0
    for name, service in model["services"].items():
        for source in bind_sources(service):
            if source.is_relative_to(REPO):
                assert source.exists(), f"service {name} mounts missing {source.relative_to(REPO)}"
                checked += 1
    build = model["services"]["roomtone"]["build"]
    assert (Path(build["context"]) / build["dockerfile"]).resolve() == DOCKERFILE
    assert checked >= 6


def test_every_file_the_dockerfile_copies_or_runs_exists():
    text = DOCKERFILE.read_text()
    referenced = set(re.findall(r"\b((?:scripts|deploy)/[\w./-]+)", text))
    assert {"scripts/setup.sh", "deploy/roomtone.toml"} <= referenced
    for path in referenced:
        assert (REPO / path).exists(), f"deploy/Dockerfile refers to missing {path}"
    # setup.sh reads these: the one source of truth for dependencies.
    for path in ("scripts/apt-packages.txt", "requirements.lock", "pyproject.toml"):
        assert (REPO / path).is_file()


def test_dockerfile_installs_through_setup_script_and_runs_as_a_non_root_user():
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    base = next(line for line in lines if line.startswith("FROM "))
    assert base.split()[1] in ("python:3.11-slim-bookworm", "debian:12", "debian:bookworm")
    assert any("bash scripts/setup.sh" in line for line in lines)
    assert not any(re.search(r"\b(pip|apt-get) install\b", line) for line in lines), \
        "the Dockerfile must not install anything setup.sh does not"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image must end running as a non-root user"


def test_the_image_compiles_the_projects_bytecode_its_non_root_user_could_not_write():
    text = DOCKERFILE.read_text()
    assert "PYTHONDONTWRITEBYTECODE=1" in text
    compile_at = text.index("-m compileall -q encoder service")
    assert text.index("bash scripts/setup.sh") < compile_at < text.index("\nUSER ")


def test_build_context_leaves_out_the_local_venv_and_git_but_keeps_models():
    ignored = {line.strip().lstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", ".git"} <= ignored
    assert not ignored & {"models", "scripts", "encoder", "service", "requirements.lock", "pyproject.toml"}


def test_daemon_environment_uses_real_config_keys_and_keeps_the_loopback_listeners():
    from service.config import DaemonConfig, build, env_overrides, merge, read_toml

    env = compose_config()["services"]["roomtone"]["environment"]
    roomtone_env = {k: str(v) for k, v in env.items() if k.startswith("ROOMTONE_")}
    config = build(DaemonConfig, merge(read_toml(EXAMPLE_CONFIG), env_overrides(roomtone_env)))
    assert config.grpc.address == "127.0.0.1:50051"
    assert (config.metrics.address, config.web.address) == ("127.0.0.1", "127.0.0.1")
    assert config.data_dir == "/var/lib/roomtone"
    assert config.pipeline.device == "cpu"
    # the data dir is a volume, and the model path lies in the mounted models folder
    mounts = {v["target"] if isinstance(v, dict) else v.split(":")[1]
              for v in compose_config()["services"]["roomtone"]["volumes"]}
    assert "/var/lib/roomtone" in mounts
    assert "/opt/roomtone/models" in mounts and config.model.startswith("/opt/roomtone/models/")


def test_the_image_does_not_move_the_listeners_off_loopback():
    text = DOCKERFILE.read_text()
    assert "0.0.0.0" not in text and "ROOMTONE_GRPC__ADDRESS" not in text and "EXPOSE" not in text


def test_prometheus_scrapes_the_daemons_metrics_listener():
    from service.config import read_toml

    metrics = read_toml(EXAMPLE_CONFIG)["metrics"]
    assert f'"{metrics["address"]}:{metrics["port"]}"' in PROMETHEUS_CONFIG.read_text()
    model = compose_config()
    targets = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in model["services"]["prometheus"]["volumes"]}
    assert {"/etc/prometheus/prometheus.yml", "/etc/prometheus/rules"} <= targets


def test_the_audio_device_is_passed_through_to_the_daemon():
    service = compose_config()["services"]["roomtone"]
    assert Path("/dev/snd") in bind_sources(service)
    assert any(rule.startswith("c 116:") for rule in service["device_cgroup_rules"]), "ALSA devices not allowed"
    assert service.get("group_add"), "the daemon user needs the audio group"


def test_pulseaudio_variant_mounts_the_server_socket_and_cookie():
    service = compose_config(PULSEAUDIO, env=PULSE_ENV)["services"]["roomtone"]
    assert Path("/run/user/1000/pulse/native") in bind_sources(service)
    assert service["environment"]["PULSE_SERVER"] == "unix:/run/pulse/native"


def test_gpu_variant_reserves_an_nvidia_gpu_and_runs_the_model_on_cuda():
    service = compose_config(GPU)["services"]["roomtone"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert service["environment"]["ROOMTONE_PIPELINE__DEVICE"] == "cuda"


def test_compose_file_documents_its_variants():
    text = COMPOSE_FILE.read_text()
    assert GPU in text and PULSEAUDIO in text
