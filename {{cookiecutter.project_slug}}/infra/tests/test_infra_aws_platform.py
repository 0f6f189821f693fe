"""AwsPlatform + BlueprintApp on EKS (platform aws-eks), under Pulumi mocks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from blueprint_infra.aws.registry import PROJECT_ROOT
from blueprint_infra.program import run
from blueprint_infra.testing import (
    AWS_CALLS,
    AWS_OUTPUTS,
    Captured,
    is_secret,
    policy_violations,
    run_program,
    schema_errors,
)

CONFIG: dict[str, Any] = {
    "platform": "aws-eks",
    "namespace": "genai",
    "images": {"tag": "1.0.0"},
    "llm": {"model": "Qwen/Qwen2.5-7B-Instruct", "accelerator": "gpu"},
    "aws": {
        "gpuNodes": {
            "instanceType": "g6.2xlarge",
            "minSize": 1,
            "desiredSize": 1,
            "maxSize": 3,
            "diskSizeGb": 200,
        }
    },
    "masterKey": "sk-aws-master-key-0123456789",
    "redisPassword": "valkey-auth-token-0123456789",
}
SECRETS = ("masterKey", "redisPassword")
NODE_GROUP = "eks:index:ManagedNodeGroup"


@pytest.fixture(scope="module")
def stack() -> Captured:
    return run_program(run, CONFIG, secret_keys=SECRETS, outputs=AWS_OUTPUTS, calls=AWS_CALLS)


def test_the_stack_meets_every_policy_of_the_pack(stack: Captured) -> None:
    assert policy_violations(stack, mandatory_only=False) == []


def test_every_kubernetes_object_passes_the_strict_schema(stack: Captured) -> None:
    assert schema_errors(stack) == []


def test_components_and_platform_resources_exist(stack: Captured) -> None:
    types = {r.type for r in stack.resources}
    assert {
        "blueprint:index:AwsPlatform",
        "blueprint:index:BlueprintApp",
        "awsx:ec2:Vpc",
        "eks:index:Cluster",
        NODE_GROUP,
        "aws:elasticache/replicationGroup:ReplicationGroup",
        "aws:ecr/repository:Repository",
        "docker-build:index:Image",
        "pulumi:providers:kubernetes",
    } <= types


def test_cluster_gets_the_volume_driver_and_metrics_api(stack: Captured) -> None:
    addons = {r.inputs["addonName"]: r.inputs for r in stack.of_type("aws:eks/addon:Addon")}
    assert set(addons) == {"aws-ebs-csi-driver", "metrics-server"}
    assert {a["clusterName"] for a in addons.values()} == {"genai-app"}
    assert len(stack.of_type("aws:iam/role:Role")) == 1
    policies = {
        r.inputs["policyArn"]
        for r in stack.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    }
    assert "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy" in policies
    assert "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy" in policies


def test_vpc_tags_subnets_for_load_balancers(stack: Captured) -> None:
    (vpc,) = stack.of_type("awsx:ec2:Vpc")
    specs = {spec["type"]: spec["tags"] for spec in vpc.inputs["subnetSpecs"]}
    assert specs == {
        "Public": {"kubernetes.io/role/elb": "1"},
        "Private": {"kubernetes.io/role/internal-elb": "1"},
    }


def test_cluster_nodes_live_in_private_subnets(stack: Captured) -> None:
    (cluster,) = stack.of_type("eks:index:Cluster")
    assert cluster.inputs["skipDefaultNodeGroup"] is True
    assert cluster.inputs["nodeAssociatePublicIpAddress"] is False
    assert cluster.inputs["privateSubnetIds"] == ["subnet-private-a", "subnet-private-b"]
    assert cluster.inputs["version"] == "1.33"
    # Without the VPC CNI policy agent the app's NetworkPolicies would be ignored.
    assert cluster.inputs["vpcCniOptions"]["enableNetworkPolicy"] is True


def test_gpu_node_group_uses_the_al2023_nvidia_ami_with_a_taint(stack: Captured) -> None:
    groups = {r.name: r.inputs for r in stack.of_type(NODE_GROUP)}
    gpu = groups["genai-app-gpu"]
    assert gpu["amiType"] == "AL2023_x86_64_NVIDIA"
    assert gpu["instanceTypes"] == ["g6.2xlarge"]
    assert gpu["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
    assert gpu["labels"] == {"node-pool": "gpu"}
    assert gpu["scalingConfig"] == {"minSize": 1, "desiredSize": 1, "maxSize": 3}
    system = groups["genai-app-system"]
    assert system["amiType"] == "AL2023_x86_64_STANDARD"
    assert system.get("taints", []) == []


def test_device_plugin_runs_only_on_gpu_nodes(stack: Captured) -> None:
    plugin = stack.one("kubernetes:apps/v1:DaemonSet", "nvidia-device-plugin").manifest
    pod = plugin["spec"]["template"]["spec"]
    assert plugin["metadata"]["namespace"] == "kube-system"
    assert pod["nodeSelector"] == {"node-pool": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["containers"][0]["resources"]["limits"]


def test_llm_is_scheduled_on_the_gpu_node_group(stack: Captured) -> None:
    pod = stack.one("kubernetes:apps/v1:Deployment", "llm").manifest["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"node-pool": "gpu"}
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["containers"][0]["image"].endswith(f"@sha256:{'0' * 64}")
    assert "/genai-app/model-gpu:1.0.0" in pod["containers"][0]["image"]


def test_valkey_has_tls_an_auth_token_and_vector_search(stack: Captured) -> None:
    (group,) = stack.of_type("aws:elasticache/replicationGroup:ReplicationGroup")
    inputs = group.inputs
    assert inputs["engine"] == "valkey"
    assert tuple(int(p) for p in inputs["engineVersion"].split(".")) >= (8, 2)
    assert inputs["transitEncryptionEnabled"] is True
    assert inputs["atRestEncryptionEnabled"] is True
    assert is_secret(inputs["authToken"])
    (subnets,) = stack.of_type("aws:elasticache/subnetGroup:SubnetGroup")
    assert subnets.inputs["subnetIds"] == ["subnet-private-a", "subnet-private-b"]
    (parameters,) = stack.of_type("aws:elasticache/parameterGroup:ParameterGroup")
    assert parameters.inputs["family"] == "valkey8"
    assert {"name": "maxmemory-policy", "value": "volatile-lru"} in parameters.inputs["parameters"]


def test_app_uses_elasticache_over_tls_and_runs_no_redis(stack: Captured) -> None:
    assert not stack.of_type("kubernetes:apps/v1:StatefulSet")
    secret = stack.one("kubernetes:core/v1:Secret", "gateway-secrets")
    assert is_secret(secret.inputs["stringData"])
    url = secret.manifest["stringData"]["GATEWAY_REDIS_URL"]
    assert url == (
        "rediss://:valkey-auth-token-0123456789@"
        "master.genai-app-cache.abc123.euw1.cache.amazonaws.com:6379/0"
    )


def test_only_the_gateway_and_the_key_job_reach_elasticache_in_the_vpc(stack: Captured) -> None:
    policies = {
        r.name: r.manifest["spec"]
        for r in stack.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    }
    vpc = {
        "to": [{"ipBlock": {"cidr": "10.0.0.0/16"}}],
        "ports": [{"protocol": "TCP", "port": 6379}],
    }
    assert vpc in policies["allow-gateway-egress"]["egress"]
    assert policies["allow-evals-key-egress"]["egress"] == [vpc]
    assert "default-deny-egress" in policies


def test_images_are_built_for_each_needed_service_and_pushed_to_ecr(stack: Captured) -> None:
    repositories = {r.inputs["name"] for r in stack.of_type("aws:ecr/repository:Repository")}
    assert repositories == {
        "genai-app/gateway",
        "genai-app/evals",
        "genai-app/model-gpu",
        "genai-app/model-cpu",
    }
    builds = {r.name: r.inputs for r in stack.of_type("docker-build:index:Image")}
    gpu = builds["genai-app-model-gpu"]
    assert gpu["dockerfile"]["location"].endswith("services/model/Dockerfile.gpu")
    # Every image builds from the project root, which holds the shared package (common/).
    roots = {Path(build["context"]["location"]) for build in builds.values()}
    assert roots == {PROJECT_ROOT}, roots
    assert (PROJECT_ROOT / "common" / "pyproject.toml").is_file()
    assert gpu["push"] is True
    assert gpu["buildOnPreview"] is False
    assert gpu["platforms"] == ["linux/amd64"]
    registries = gpu["registries"]
    assert is_secret(registries) or is_secret(registries[0]["password"])


def test_outputs_hold_a_secret_kubeconfig_and_no_password(stack: Captured) -> None:
    assert "kubeconfig" in stack.secret_outputs
    assert stack.outputs["redisEndpoint"] == (
        "master.genai-app-cache.abc123.euw1.cache.amazonaws.com:6379"
    )
    assert CONFIG["redisPassword"] not in json.dumps(stack.outputs)
    assert set(stack.outputs["images"]) == {"gateway", "modelCpu", "modelGpu", "evals"}
