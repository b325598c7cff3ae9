"""The compose file's `roomtone` service as a process on this machine: the image's ENV and ENTRYPOINT
(deploy/Dockerfile), the service's environment and command (`docker-compose config`), with every path
the container sees mapped to the host (bind mounts to their sources, named volumes and the image's
/opt/roomtone to a temporary folder and the checkout) and every fixed port mapped to a free one (another
roomtone, or another test, may hold the real ones here). Nothing else is changed."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from deploy_files import DEPLOY, REPO, compose_config

DOCKERFILE = DEPLOY / "Dockerfile"
#: Ports the stack uses on the host's loopback: gRPC, /metrics, the web page, MQTT.
STACK_PORTS = (50051, 9464, 9480, 1883)
#: Where the image keeps the repository (Dockerfile WORKDIR and COPY).
IMAGE_REPO = "/opt/roomtone"


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of a Dockerfile, continuation lines joined and comments left out."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def image_environment(host_path: str) -> dict[str, str]:
    """The ENV the image sets (``$PATH`` expanded with ``host_path``)."""
    env: dict[str, str] = {}
    for word, rest in dockerfile_instructions(DOCKERFILE.read_text()):
        if word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value.replace("$PATH", host_path)
    return env


def image_entrypoint() -> list[str]:
    """The image's ENTRYPOINT (exec form)."""
    import json

    return json.loads(next(rest for word, rest in dockerfile_instructions(DOCKERFILE.read_text()) if word == "ENTRYPOINT"))


@dataclass
class ComposeDaemon:
    """What `docker-compose up roomtone` would run, as a command line and environment for this machine."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    ports: dict[int, int]  # stack port -> the free port used here
    mounts: dict[str, Path]  # container path -> host path
    service: dict  # the service as `docker-compose config` printed it


def map_text(text: str, mounts: dict[str, Path], ports: dict[int, int]) -> str:
    """``text`` with the container's paths replaced by their host paths and the stack's ports by free ones."""
    for target in sorted(mounts, key=len, reverse=True):
        text = re.sub(re.escape(target) + r"(?=[/\"':]|$)", str(mounts[target]), text, flags=re.M)
    return re.sub(r"\b(%s)\b" % "|".join(str(p) for p in ports), lambda m: str(ports[int(m.group(1))]), text)


def compose_daemon(tmp: Path, ports: dict[int, int]) -> ComposeDaemon:
    """The `roomtone` service mapped into ``tmp``: named volumes become folders there, read-only bind mounts of
    files are copied there with their container paths and ports mapped (the daemon reads them)."""
    service = compose_config()["services"]["roomtone"]
    mounts: dict[str, Path] = {IMAGE_REPO: REPO}
    files: list[tuple[str, Path]] = []
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("/dev/"):
            continue  # the sound devices: whatever this machine has (the daemon falls back to its demo)
        if source.startswith("/"):
            host = Path(source)
            if host.is_file():
                files.append((target, host))
            mounts[target] = host
        else:  # a named volume
            mounts[target] = tmp / "volumes" / source
            mounts[target].mkdir(parents=True, exist_ok=True)
    for target, host in files:  # config files mention container paths: a mapped copy
        copy = tmp / "mounted" / target.lstrip("/")
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(map_text(host.read_text(), mounts, ports))
        mounts[target] = copy
    path = os.environ.get("PATH", "/usr/bin:/bin")
    env = {**image_environment(path), **{k: str(v) for k, v in service.get("environment", {}).items()}}
    env = {k: map_text(v, mounts, ports) for k, v in env.items()}
    env["HOME"] = str(tmp / "home")
    (tmp / "home").mkdir(exist_ok=True)
    entry = image_entrypoint()
    executable = next((Path(d) / entry[0] for d in env["PATH"].split(":") if (Path(d) / entry[0]).is_file()), None)
    assert executable is not None, f"{entry[0]} is not on the image's PATH {env['PATH']}"
    argv = [str(executable), *entry[1:], *(map_text(arg, mounts, ports) for arg in service["command"])]
    return ComposeDaemon(argv, env, REPO, ports, mounts, service)
