"""ECR repositories and image builds for the gateway, the model service and evals.

Images build from this project's root with each service's Dockerfile (Docker with buildx
on the machine that runs `pulumi up`), as compose builds them: every image installs the
shared package in `common/` beside its service, and the root `.dockerignore` sends only
those folders. They are pinned by digest, so a Deployment changes only when its image
content does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build

from blueprint_infra.config import StackConfig
from blueprint_infra.context import Images

PROJECT_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class ImageSource:
    key: str  # field of Images
    repository: str
    dockerfile: str  # relative to the project root, the build context of every image


SOURCES = {
    "gateway": ImageSource("gateway", "gateway", "gateway/Dockerfile"),
    "model_cpu": ImageSource("model_cpu", "model-cpu", "services/model/Dockerfile.cpu"),
    "model_gpu": ImageSource("model_gpu", "model-gpu", "services/model/Dockerfile.gpu"),
    "evals": ImageSource("evals", "evals", "evals/Dockerfile"),
}

KEEP_LAST_IMAGES = {
    "rules": [
        {
            "rulePriority": 1,
            "description": "keep the last 20 images",
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 20},
            "action": {"type": "expire"},
        }
    ]
}


def needed_sources(config: StackConfig) -> list[ImageSource]:
    accelerators = {s.accelerator for s in (config.llm, config.embedder) if s.enabled}
    keys = ["gateway", "evals"] + [f"model_{a}" for a in sorted(accelerators)]
    return [SOURCES[key] for key in keys]


def build_images(name: str, config: StackConfig, opts: pulumi.ResourceOptions) -> Images:
    aws_cfg = config.aws
    refs: dict[str, pulumi.Input[str]] = {key: "" for key in SOURCES}
    for source in needed_sources(config):
        repository = aws.ecr.Repository(
            f"{name}-{source.repository}",
            name=f"{name}/{source.repository}",
            image_scanning_configuration={"scan_on_push": True},
            image_tag_mutability="MUTABLE",
            force_delete=aws_cfg.force_delete_images,
            opts=opts,
        )
        aws.ecr.LifecyclePolicy(
            f"{name}-{source.repository}",
            repository=repository.name,
            policy=json.dumps(KEEP_LAST_IMAGES),
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=repository)),
        )
        token = aws.ecr.get_authorization_token_output()
        build_args: dict[str, pulumi.Input[str]] = {}
        if source.key == "model_cpu" and aws_cfg.torch_index_url:
            build_args["TORCH_INDEX_URL"] = aws_cfg.torch_index_url
        image = docker_build.Image(
            f"{name}-{source.repository}",
            context=docker_build.BuildContextArgs(location=str(PROJECT_ROOT)),
            dockerfile=docker_build.DockerfileArgs(location=str(PROJECT_ROOT / source.dockerfile)),
            platforms=[docker_build.Platform(aws_cfg.build_platform)],
            build_args=build_args or None,
            tags=[pulumi.Output.format("{0}:{1}", repository.repository_url, config.images.tag)],
            push=True,
            build_on_preview=False,
            registries=[
                docker_build.RegistryArgs(
                    address=repository.repository_url,
                    username=token.user_name,
                    password=pulumi.Output.secret(token.password),
                )
            ],
            opts=opts,
        )
        refs[source.key] = image.ref
    return Images(
        gateway=refs["gateway"],
        model_cpu=refs["model_cpu"],
        model_gpu=refs["model_gpu"],
        evals=refs["evals"],
    )
