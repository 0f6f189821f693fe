"""Publishing the gateway through a cloud load balancer: TLS or the policy pack refuses it."""

from __future__ import annotations

from typing import Any

from blueprint_infra.program import run
from blueprint_infra.testing import policy_violations, run_program, schema_errors

BASE: dict[str, Any] = {
    "images": {"registry": "registry.example.com/acme", "tag": "0.1.0"},
    "observability": {"collector": False},
    "evals": {"enabled": False},
    "masterKey": "sk-test-master-key-0123456789",
    "redisPassword": "redis-password-0123456789",
}
SECRETS = ("masterKey", "redisPassword")
CERTIFICATE = "arn:aws:acm:eu-west-1:123456789012:certificate/abc"


def gateway_service(gateway: dict[str, Any]):
    stack = run_program(run, {**BASE, "gateway": gateway}, secret_keys=SECRETS)
    return stack, stack.one("kubernetes:core/v1:Service", "gateway").manifest


def test_load_balancer_with_a_certificate_serves_https_and_passes_policy() -> None:
    stack, service = gateway_service(
        {"serviceType": "LoadBalancer", "loadBalancerTlsCertificate": CERTIFICATE}
    )
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"] == [{"name": "http", "port": 443, "targetPort": "http"}]
    annotations = service["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-ssl-cert"] == CERTIFICATE
    assert policy_violations(stack) == []
    assert schema_errors(stack, versions=("1.33",)) == []
    # No address before the cloud assigns one; the URL says so instead of guessing.
    assert stack.outputs["gatewayUrl"] == "https://pending/v1"
    assert not stack.of_type("kubernetes:batch/v1:Job")


def test_load_balancer_without_tls_is_refused_by_the_policy_pack() -> None:
    stack, service = gateway_service({"serviceType": "LoadBalancer"})
    assert "annotations" not in service["metadata"]
    found = policy_violations(stack)
    assert len(found) == 1
    assert found[0].startswith("no-public-endpoint-without-tls: kubernetes:core/v1:Service gateway")
