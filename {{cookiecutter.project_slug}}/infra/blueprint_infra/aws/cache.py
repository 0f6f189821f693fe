"""ElastiCache for Valkey (8.2+: vector search for RAG and the semantic cache).

TLS in transit, an auth token from `pulumi config --secret redisPassword`, private
subnets only, reachable from inside the VPC, `volatile-lru` like the in-cluster Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_awsx as awsx

from blueprint_infra.config import AwsConfig

PORT = 6379


@dataclass(frozen=True)
class Cache:
    group: aws.elasticache.ReplicationGroup
    host: pulumi.Output[str]


def create_cache(
    name: str,
    cfg: AwsConfig,
    vpc: awsx.ec2.Vpc,
    auth_token: str,
    opts: pulumi.ResourceOptions,
) -> Cache:
    subnets = aws.elasticache.SubnetGroup(
        f"{name}-cache", subnet_ids=vpc.private_subnet_ids, opts=opts
    )
    security_group = aws.ec2.SecurityGroup(
        f"{name}-cache",
        vpc_id=vpc.vpc_id,
        description="Valkey: reachable from inside the VPC only",
        ingress=[
            {"protocol": "tcp", "from_port": PORT, "to_port": PORT, "cidr_blocks": [cfg.vpc_cidr]}
        ],
        opts=opts,
    )
    major = cfg.cache_engine_version.split(".")[0]
    parameters = aws.elasticache.ParameterGroup(
        f"{name}-cache",
        family=f"valkey{major}",
        parameters=[{"name": "maxmemory-policy", "value": "volatile-lru"}],
        opts=opts,
    )
    replicas = cfg.cache_replicas
    group = aws.elasticache.ReplicationGroup(
        f"{name}-cache",
        description="Gateway cache, rate limits, API keys and vectors",
        engine="valkey",
        engine_version=cfg.cache_engine_version,
        node_type=cfg.cache_node_type,
        num_cache_clusters=replicas,
        automatic_failover_enabled=replicas > 1,
        multi_az_enabled=replicas > 1,
        port=PORT,
        parameter_group_name=parameters.name,
        subnet_group_name=subnets.name,
        security_group_ids=[security_group.id],
        transit_encryption_enabled=True,
        at_rest_encryption_enabled=True,
        auth_token=pulumi.Output.secret(auth_token),
        auth_token_update_strategy="ROTATE",
        snapshot_retention_limit=1,
        apply_immediately=True,
        opts=opts,
    )
    return Cache(group=group, host=group.primary_endpoint_address)
