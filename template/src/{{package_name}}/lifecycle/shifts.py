"""What ``simulate`` changes when it drifts traffic: the rule's constants and its description.

Kept apart from ``simulate.py`` (no NumPy or pandas here) so the command line can show the
description in ``simulate --help`` without loading them.
"""

from __future__ import annotations

# Numeric features moved (the first ones, in config order, whose values vary).
NUMERIC_SHIFTED = 2
# How far they move, in standard deviations of the sampled values.
SHIFT_SD = 1.0
# Share of the rows in the other categories that move to the rarest category.
CATEGORY_SHARE = 0.6
# Share of rows whose value of one nullable feature goes missing.
EXTRA_MISSING = 0.15

DRIFT_RULES = (
    f"the first {NUMERIC_SHIFTED} numeric features move by {SHIFT_SD:g} standard deviation "
    "toward the side with more room (staying within their min/max); "
    f"{CATEGORY_SHARE:.0%} of the other rows of the first categorical feature move to its rarest "
    f"category; one nullable feature goes missing for {EXTRA_MISSING:.0%} more rows"
)
