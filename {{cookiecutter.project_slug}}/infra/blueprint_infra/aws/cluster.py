"""EKS cluster with a system node group and a tainted GPU node group (AL2023 NVIDIA AMI)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_awsx as awsx
import pulumi_eks as eks

from blueprint_infra.config import AwsConfig, NodeGroupConfig

# Amazon Linux 2 GPU AMIs reached end of support in November 2025; AL2023's NVIDIA AMI
# ships the driver and container toolkit (the device plugin is installed separately).
GPU_AMI_TYPE = "AL2023_x86_64_NVIDIA"
SYSTEM_AMI_TYPE = "AL2023_x86_64_STANDARD"
NODE_POOL_LABEL = "node-pool"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}
NODE_POLICIES = (
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
    "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
    # The EBS CSI driver (volume claims for Redis and the weight cache) runs with the
    # node's role; use EKS Pod Identity instead if nodes must not manage volumes.
    "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy",
)
# EKS leaves these out of a new cluster: volumes need the CSI driver, the gateway's
# HorizontalPodAutoscaler needs the metrics API.
ADDONS = ("aws-ebs-csi-driver", "metrics-server")


@dataclass(frozen=True)
class Cluster:
    cluster: eks.Cluster
    gpu_nodes: eks.ManagedNodeGroup | None
    gpu_node_selector: dict[str, str]


def _node_role(name: str, opts: pulumi.ResourceOptions) -> aws.iam.Role:
    role = aws.iam.Role(
        f"{name}-nodes",
        assume_role_policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "ec2.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
        opts=opts,
    )
    for index, policy in enumerate(NODE_POLICIES):
        aws.iam.RolePolicyAttachment(
            f"{name}-nodes-{index}",
            role=role.name,
            policy_arn=policy,
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=role)),
        )
    return role


def _node_group(
    name: str,
    cluster: eks.Cluster,
    role: aws.iam.Role,
    subnets: pulumi.Input[list[str]],
    cfg: NodeGroupConfig,
    *,
    ami_type: str,
    pool: str,
    taints: list[dict[str, str]],
    opts: pulumi.ResourceOptions,
) -> eks.ManagedNodeGroup:
    return eks.ManagedNodeGroup(
        name,
        cluster=cluster,
        node_role=role,
        subnet_ids=subnets,
        ami_type=ami_type,
        instance_types=[cfg.instance_type],
        disk_size=cfg.disk_size_gb,
        scaling_config={
            "min_size": cfg.min_size,
            "desired_size": cfg.desired_size,
            "max_size": cfg.max_size,
        },
        labels={NODE_POOL_LABEL: pool},
        taints=taints,
        opts=opts,
    )


def create_cluster(
    name: str, cfg: AwsConfig, vpc: awsx.ec2.Vpc, opts: pulumi.ResourceOptions
) -> Cluster:
    role = _node_role(name, opts)
    cluster = eks.Cluster(
        name,
        name=name,
        version=cfg.kubernetes_version,
        vpc_id=vpc.vpc_id,
        public_subnet_ids=vpc.public_subnet_ids,
        private_subnet_ids=vpc.private_subnet_ids,
        node_associate_public_ip_address=False,
        skip_default_node_group=True,
        instance_roles=[role],
        create_oidc_provider=True,
        # The VPC CNI enforces NetworkPolicies only with its policy agent switched on.
        vpc_cni_options=eks.VpcCniOptionsArgs(enable_network_policy=True),
        enabled_cluster_log_types=["api", "audit", "authenticator"],
        opts=opts,
    )
    node_opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=cluster))
    system_nodes = _node_group(
        f"{name}-system",
        cluster,
        role,
        vpc.private_subnet_ids,
        cfg.system_nodes,
        ami_type=SYSTEM_AMI_TYPE,
        pool="system",
        taints=[],
        opts=node_opts,
    )
    for addon in ADDONS:
        aws.eks.Addon(
            f"{name}-{addon}",
            cluster_name=name,
            addon_name=addon,
            resolve_conflicts_on_create="OVERWRITE",
            opts=pulumi.ResourceOptions.merge(
                node_opts, pulumi.ResourceOptions(depends_on=[system_nodes])
            ),
        )
    gpu_nodes = None
    if cfg.gpu_nodes is not None:
        gpu_nodes = _node_group(
            f"{name}-gpu",
            cluster,
            role,
            vpc.private_subnet_ids,
            cfg.gpu_nodes,
            ami_type=GPU_AMI_TYPE,
            pool="gpu",
            taints=[GPU_TAINT],
            opts=node_opts,
        )
    return Cluster(cluster=cluster, gpu_nodes=gpu_nodes, gpu_node_selector={NODE_POOL_LABEL: "gpu"})
