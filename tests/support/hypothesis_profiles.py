"""Hypothesis settings shared by the property tests: one profile for CI, one for developers.

With ``CI`` set (``.ci/run`` sets it) the examples are derandomized: every run tries the same
ones, so a red run is reproduced by running it again, and no example database is written. A
developer's run draws new examples each time and keeps failing ones in ``.hypothesis/`` to
replay them first. No deadline in either: a shared 2-core machine makes per-example timings noise.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "sluice-ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("sluice-dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROFILE = "sluice-ci" if os.environ.get("CI") else "sluice-dev"
settings.load_profile(PROFILE)


def examples(count: int) -> settings:
    """The loaded profile, trying ``count`` examples."""
    return settings(settings.get_profile(PROFILE), max_examples=count)
