"""AWS platform for `platform: aws-eks`: VPC, EKS with GPU nodes, ElastiCache, ECR.

Projects generated with `deploy_target=kubernetes` do not have this package.
"""

from blueprint_infra.aws.platform import AwsPlatform, deploy_on_aws

__all__ = ["AwsPlatform", "deploy_on_aws"]
