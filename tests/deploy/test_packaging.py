"""Specification of the packaging split (pyproject.toml, scripts/setup.sh, deploy/Dockerfile):
`pip install roomtone` serves without torch, `roomtone[train]` adds it, the README's commands install
both, the image is the serving variant, and a command that needs the train extra says so."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
TRAIN_ONLY = {"torch", "torchaudio", "scipy", "scikit-learn", "matplotlib", "tqdm", "onnx", "onnxscript"}


def names(requirements: list[str]) -> set[str]:
    return {r.split("==")[0].split("<")[0].split(">")[0].strip().lower() for r in requirements}


def test_the_serving_install_holds_onnx_runtime_and_no_torch():
    serving = names(PROJECT["dependencies"])
    assert {"onnxruntime", "numpy", "soundfile", "sounddevice", "grpcio", "protobuf", "faiss-cpu"} <= serving
    assert not serving & TRAIN_ONLY


def test_the_train_extra_adds_torch_and_the_exporter():
    assert TRAIN_ONLY <= names(PROJECT["optional-dependencies"]["train"])


def test_every_direct_dependency_is_pinned_as_in_the_lock():
    lock = {line.split("==")[0].lower().replace("_", "-"): line.split("==")[1]
            for line in (REPO / "requirements.lock").read_text().split() if "==" in line}
    requirements = PROJECT["dependencies"] + sum(PROJECT["optional-dependencies"].values(), [])
    for requirement in requirements:
        if requirement.startswith("setuptools"):
            continue
        name, version = requirement.split("==")
        assert lock.get(name.lower().replace("_", "-")) == version, requirement


def test_the_readme_commands_install_everything_and_the_image_only_what_serves():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert 'extras_run="train"' in setup and 'extras_test="train,test"' in setup and 'extras_serve=""' in setup
    dockerfile = [line for line in (REPO / "deploy" / "Dockerfile").read_text().splitlines() if not line.startswith("#")]
    assert any(line.strip() == "ARG SETUP=--serve" for line in dockerfile)
    assert any("bash scripts/setup.sh $SETUP" in line for line in dockerfile)


def blocked_torch(tmp_path: Path) -> dict[str, str]:
    """An environment in which `import torch` / `import torchaudio` fail as if they were not installed."""
    for name in ("torch", "torchaudio"):
        package = tmp_path / "blocked" / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}' (blocked by the test)\", name='{name}')\n")
    return {**os.environ, "PYTHONPATH": f"{tmp_path / 'blocked'}:{REPO}"}


def test_a_command_that_needs_the_train_extra_names_it_when_torch_is_absent(tmp_path, homesounds):
    clip = homesounds / "audio" / "typing" / "typing_A1_000.flac"
    result = subprocess.run([sys.executable, "-m", "service.cli.main", "embed", str(clip), "--out", str(tmp_path / "e.npz")],
                            cwd=REPO, env=blocked_torch(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert "pip install 'roomtone[train]'" in result.stderr and "torch" in result.stderr


def test_the_daemon_serves_the_bundled_model_with_torch_absent(tmp_path, homesounds):
    clip = homesounds / "audio" / "speech" / "speech_A1_000.flac"
    result = subprocess.run(
        [sys.executable, "-m", "service.cli.main", "run", "--file", str(clip), "--fast", "--max-windows", "1",
         "--data-dir", str(tmp_path / "data"), "--no-grpc", "--no-metrics", "--log-format", "text"],
        cwd=REPO, env=blocked_torch(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "model loaded" in result.stderr and "onnx" in result.stderr


def test_the_gpu_variant_builds_the_image_with_the_train_extra():
    gpu = (REPO / "deploy" / "compose" / "gpu.yml").read_text()
    assert 'SETUP: ""' in gpu and "ROOMTONE_PIPELINE__DEVICE: cuda" in gpu
