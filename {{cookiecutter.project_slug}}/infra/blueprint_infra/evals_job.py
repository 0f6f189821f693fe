"""The evals smoke suite as a Job after each deploy, and optionally on a schedule."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from blueprint_infra import kube
from blueprint_infra.context import AppContext
from blueprint_infra.gateway import NAME as GATEWAY
from blueprint_infra.gateway import PORT as GATEWAY_PORT
from blueprint_infra.observability import otel_env
from blueprint_infra.secrets import EVALS_SECRET

NAME = "evals"


def _pod_template(ctx: AppContext) -> dict[str, Any]:
    cfg = ctx.config
    env = {
        "EVALS_BASE_URL": f"http://{GATEWAY}:{GATEWAY_PORT}/v1",
        "EVALS_MODEL": cfg.llm.model,
        "EVALS_EMBEDDING_MODEL": cfg.embedder.model,
        "EVALS_REPORTS_DIR": "/tmp/reports",
        "HOME": "/tmp",
        **otel_env(ctx, NAME),
    }
    return {
        "metadata": {"labels": kube.labels(NAME, ctx.part_of)},
        "spec": {
            "restart_policy": "Never",
            "automount_service_account_token": False,
            "security_context": kube.pod_security(),
            "image_pull_secrets": ctx.pull_secrets,
            "containers": [
                {
                    "name": NAME,
                    "image": ctx.images.evals,
                    "command": ["python", "-m", "evals"],
                    "args": ["run", "--suite", cfg.evals.suite],
                    "env": kube.env(env)
                    + kube.secret_env({"EVALS_API_KEY": (EVALS_SECRET, "EVALS_API_KEY")}),
                    "resources": cfg.evals.resources.as_kubernetes(),
                    "security_context": kube.container_security(),
                    "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],
                }
            ],
            "volumes": [kube.tmp_volume(size="512Mi")],
        },
    }


def create_evals(ctx: AppContext, *after: pulumi.Resource) -> k8s.batch.v1.Job:
    cfg = ctx.config.evals
    labels = kube.labels(NAME, ctx.part_of)
    # Auto-named: a changed image or suite replaces the Job, so each deploy runs it again.
    annotations = None if cfg.await_completion else kube.SKIP_AWAIT
    job = k8s.batch.v1.Job(
        f"{NAME}-{cfg.suite}",
        metadata={
            "namespace": ctx.namespace,
            "labels": labels,
            **({"annotations": annotations} if annotations else {}),
        },
        spec={
            "backoff_limit": 3,
            "active_deadline_seconds": 1800,
            "template": _pod_template(ctx),
        },
        opts=pulumi.ResourceOptions.merge(
            ctx.child(*after),
            pulumi.ResourceOptions(
                custom_timeouts=pulumi.CustomTimeouts(create="30m", update="30m")
            ),
        ),
    )
    if cfg.schedule:
        k8s.batch.v1.CronJob(
            f"{NAME}-{cfg.suite}-scheduled",
            metadata={"namespace": ctx.namespace, "labels": labels},
            spec={
                "schedule": cfg.schedule,
                "concurrency_policy": "Forbid",
                "successful_jobs_history_limit": 3,
                "failed_jobs_history_limit": 3,
                "job_template": {"spec": {"backoff_limit": 1, "template": _pod_template(ctx)}},
            },
            opts=ctx.child(*after),
        )
    return job
