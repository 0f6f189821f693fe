"""The VPC: public subnets for load balancers, private subnets for nodes and the cache."""

from __future__ import annotations

import pulumi
import pulumi_awsx as awsx

from blueprint_infra.config import AwsConfig


def create_vpc(name: str, cfg: AwsConfig, opts: pulumi.ResourceOptions) -> awsx.ec2.Vpc:
    return awsx.ec2.Vpc(
        name,
        cidr_block=cfg.vpc_cidr,
        number_of_availability_zones=cfg.availability_zones,
        enable_dns_hostnames=True,
        nat_gateways={"strategy": cfg.nat_gateways},
        subnet_strategy="Auto",
        subnet_specs=[
            # The AWS load balancer controller finds subnets by these tags.
            {"type": "Public", "tags": {"kubernetes.io/role/elb": "1"}},
            {"type": "Private", "tags": {"kubernetes.io/role/internal-elb": "1"}},
        ],
        opts=opts,
    )
