"""Names that the config, the stage tests, results.json and the report share, defined once."""

from __future__ import annotations

# The seed's benchmark steps as results.json and benchmark.comparisons name them, and as the run prints them.
COLD, EVICT, LOCAL_HIT, CROSS_INSTANCE_HIT = "cold", "evict", "local_hit", "cross_instance_hit"
STEP_LABELS = {COLD: "step 1 cold", EVICT: "eviction with dataset B", LOCAL_HIT: "step 2 local hit",
               CROSS_INSTANCE_HIT: "step 3 cross-instance hit"}

# The two comparisons every target has, each named after its field under `thresholds`.
LOCAL_HIT_FRACTION, CROSS_INSTANCE_FRACTION = "local_hit_ttft_fraction", "cross_instance_ttft_fraction"
THRESHOLDS = (LOCAL_HIT_FRACTION, CROSS_INSTANCE_FRACTION)

# Every failure to bring something up, or to use it, starts with this; the report's "Deployment faults" category
# matches it (harness/report.py).
DEPLOYMENT = "deployment: "

# A run's folder is reports/<target>-<its start, in this strftime format>.
RUN_STAMP = "%Y%m%d-%H%M%S"
