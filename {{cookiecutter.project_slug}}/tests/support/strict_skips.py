"""Turn skips into failures when BLUEPRINT_STRICT_SKIPS=1 (CI sets it).

A test may skip only where the platform truly cannot run it. CI runs on a machine
that can run everything, so there a skip means something is missing and must fail.
"""

from __future__ import annotations

import os

import pytest


def strict_skips_enabled() -> bool:
    return os.environ.get("BLUEPRINT_STRICT_SKIPS", "") not in ("", "0", "false")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if strict_skips_enabled() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under BLUEPRINT_STRICT_SKIPS=1: {reason}"
