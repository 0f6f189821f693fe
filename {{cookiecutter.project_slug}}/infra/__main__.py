"""Pulumi entry point: `pulumi up` runs this file (see docs/deploy.md)."""

import pulumi

from blueprint_infra.program import run

for name, value in run().items():
    pulumi.export(name, value)
