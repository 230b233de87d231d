import os
import tempfile

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# The native planner caches autotune timings on disk; tests keep theirs private.
os.environ.setdefault("EDGED_CACHE_DIR", tempfile.mkdtemp(prefix="edged-test-cache-"))
