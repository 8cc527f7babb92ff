"""The cluster configs: they parse, Ray's own schema accepts the launcher configs, the manifests carry what
KubeRay needs, Ray's token authentication reaches every node, and no port is opened to the world."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import ray
import typer
import yaml

from tune_attn.cli import app

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
LAUNCHER = ["aws.yaml", "gcp.yaml"]
KUBERAY = ["kuberay-raycluster.yaml", "kuberay-rayjob.yaml"]


def _load(name: str) -> Any:
    return yaml.safe_load((CLUSTER / name).read_text())


def test_every_cluster_yaml_is_here_and_parses() -> None:
    assert sorted(p.name for p in CLUSTER.glob("*.yaml")) == sorted(LAUNCHER + KUBERAY)
    for name in LAUNCHER + KUBERAY:
        assert isinstance(_load(name), dict), name


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_configs_validate_against_the_installed_rays_schema(name: str) -> None:
    from ray.autoscaler._private.util import validate_config

    cfg = _load(name)
    validate_config(cfg)  # raises on a schema error
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types and types[cfg["head_node_type"]]["resources"] == {"CPU": 0}
    workers = [t for k, t in types.items() if k != cfg["head_node_type"]]
    assert workers and all(t["max_workers"] >= t["min_workers"] >= 0 for t in workers)
    # The package is installed on every node, from the checkout.
    assert cfg["file_mounts"]["~/tune-attn"] == "."
    assert any("pip install -e ~/tune-attn" in c for c in cfg["setup_commands"])
    # Token authentication: the same token file on every node, every `ray start` in token mode.
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for cmd in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]:
        assert "ray start" not in cmd or "RAY_AUTH_MODE=token ray start" in cmd
    assert any("--dashboard-host=127.0.0.1" in c for c in cfg["head_start_ray_commands"])


def test_aws_nodes_use_the_users_security_group_so_ray_never_opens_ssh_to_the_world() -> None:
    cfg = _load("aws.yaml")
    # Ray creates its own group (SSH from 0.0.0.0/0) for node types without SecurityGroupIds.
    for name, node in cfg["available_node_types"].items():
        assert node["node_config"].get("SecurityGroupIds"), name
    assert "security_group" not in cfg["provider"]


def test_gcp_nodes_have_no_external_address() -> None:
    cfg = _load("gcp.yaml")
    assert cfg["provider"]["use_internal_ips"] is True
    for name, node in cfg["available_node_types"].items():
        for nic in node["node_config"]["networkInterfaces"]:
            assert "accessConfigs" not in nic, name


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (str(k), *_strings(v))]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [str(node)]


def test_nothing_opens_a_port_to_the_world() -> None:
    for name in LAUNCHER + KUBERAY:
        for value in _strings(_load(name)):  # every key and value (comments may explain the hazard)
            for needle in ("0.0.0.0", "LoadBalancer", "NodePort", "::/0", "Ingress", "hostNetwork"):
                assert needle not in value, f"{name}: {value}"


def _cluster_specs(name: str) -> list[dict[str, Any]]:
    doc = _load(name)
    assert doc["apiVersion"] == "ray.io/v1" and doc["metadata"]["name"]
    return [doc["spec"]] if doc["kind"] == "RayCluster" else [doc["spec"]["rayClusterSpec"]]


@pytest.mark.parametrize("name", KUBERAY)
def test_kuberay_manifests_carry_the_required_fields(name: str) -> None:
    for spec in _cluster_specs(name):
        assert spec["rayVersion"] == ray.__version__  # the image's Ray must match the driver's
        head = spec["headGroupSpec"]
        assert head["serviceType"] == "ClusterIP" and "rayStartParams" in head
        groups = [head, *spec["workerGroupSpecs"]]
        for group in groups:
            (container,) = group["template"]["spec"]["containers"]
            assert container["image"] and container["name"]
            env = {e["name"]: e for e in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ray-auth-token"
        for worker in spec["workerGroupSpecs"]:
            assert (
                worker["groupName"]
                and 0 <= worker["minReplicas"] <= worker["replicas"] <= worker["maxReplicas"]
            )
            (container,) = worker["template"]["spec"]["containers"]
            assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_the_rayjob_entrypoint_is_a_valid_sweep_command() -> None:
    job = _load("kuberay-rayjob.yaml")
    args = shlex.split(job["spec"]["entrypoint"])
    assert args[:2] == ["tune-attn", "sweep"]
    command = typer.main.get_command(app)
    ctx = command.make_context("tune-attn", args[1:], resilient_parsing=False)  # type: ignore[attr-defined]
    sub = command.get_command(ctx, "sweep")  # type: ignore[attr-defined]
    params = sub.make_context("sweep", args[2:]).params
    assert (CLUSTER.parent / params["space"]).is_file()
    assert params["address"] == "auto" and params["gpus_per_trial"] == 0.25
    assert params["storage"].startswith("s3://")
    # named: the same command with --resume continues it (unnamed, each run would be a new sweep)
    assert params["name"]
    # Stopping the job gives the sweep time for its clean stop (SIGTERM), not Ray's 3 s before SIGKILL.
    env_vars = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    assert int(env_vars["RAY_JOB_STOP_WAIT_TIME_S"]) >= 30
