"""Pulumi components that deploy the blueprint: `BlueprintApp` on any Kubernetes cluster and,
in `blueprint_infra.aws`, `AwsPlatform` (VPC, EKS with GPU nodes, ElastiCache, ECR).

The package root imports nothing, so `platform: kubernetes` never loads the AWS providers.
"""
