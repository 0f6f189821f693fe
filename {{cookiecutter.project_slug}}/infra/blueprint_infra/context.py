"""What every resource module of `BlueprintApp` receives."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from blueprint_infra.config import StackConfig


@dataclass(frozen=True)
class Images:
    """Fully qualified image references, as Pulumi inputs (ECR builds resolve later)."""

    gateway: pulumi.Input[str]
    model_cpu: pulumi.Input[str]
    model_gpu: pulumi.Input[str]
    evals: pulumi.Input[str]

    @classmethod
    def from_registry(cls, config: StackConfig) -> Images:
        images = config.images
        return cls(
            gateway=images.reference(images.gateway),
            model_cpu=images.reference(images.model_cpu),
            model_gpu=images.reference(images.model_gpu),
            evals=images.reference(images.evals),
        )

    def as_outputs(self) -> dict[str, pulumi.Input[str]]:
        return {
            "gateway": self.gateway,
            "modelCpu": self.model_cpu,
            "modelGpu": self.model_gpu,
            "evals": self.evals,
        }


@dataclass(frozen=True)
class AppContext:
    config: StackConfig
    namespace: pulumi.Input[str]
    part_of: str
    images: Images
    opts: pulumi.ResourceOptions

    def child(self, *depends_on: pulumi.Resource) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions.merge(
            self.opts, pulumi.ResourceOptions(depends_on=list(depends_on))
        )

    @property
    def pull_secrets(self) -> list[dict[str, str]]:
        secret = self.config.images.pull_secret
        return [{"name": secret}] if secret else []
