"""Policy pack: `pulumi preview --policy-pack policy` from infra/ (see docs/deploy.md)."""

import sys
from pathlib import Path

from pulumi_policy import Policy, PolicyPack

# The rules live in blueprint_infra (next to this folder) so that tests import them directly.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blueprint_infra.policies import POLICIES

policies: list[Policy] = [*POLICIES]
PolicyPack(name="blueprint-policies", policies=policies)
