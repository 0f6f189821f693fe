"""NVIDIA device plugin DaemonSet: advertises `nvidia.com/gpu` on the GPU nodes.

Plain Kubernetes objects (not a Helm chart), so the program stays reviewable and every
object is schema-validated in the tests.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from blueprint_infra.aws.cluster import NODE_POOL_LABEL

IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.17.4"
NAME = "nvidia-device-plugin"


def create_device_plugin(opts: pulumi.ResourceOptions) -> k8s.apps.v1.DaemonSet:
    labels = {"app.kubernetes.io/name": NAME}
    return k8s.apps.v1.DaemonSet(
        NAME,
        metadata={"name": NAME, "namespace": "kube-system", "labels": labels},
        spec={
            "selector": {"match_labels": labels},
            "update_strategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "priority_class_name": "system-node-critical",
                    "node_selector": {NODE_POOL_LABEL: "gpu"},
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                        {"key": "CriticalAddonsOnly", "operator": "Exists"},
                    ],
                    "containers": [
                        {
                            "name": NAME,
                            "image": IMAGE,
                            "env": [{"name": "FAIL_ON_INIT_ERROR", "value": "false"}],
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "64Mi"},
                                "limits": {"cpu": "200m", "memory": "256Mi"},
                            },
                            "security_context": {
                                "allow_privilege_escalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volume_mounts": [
                                {
                                    "name": "device-plugin",
                                    "mount_path": "/var/lib/kubelet/device-plugins",
                                }
                            ],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "device-plugin",
                            "host_path": {"path": "/var/lib/kubelet/device-plugins"},
                        }
                    ],
                },
            },
        },
        opts=opts,
    )
