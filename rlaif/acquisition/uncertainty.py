"""uncertainty: the opposite end of certainty -- keep the n pairs with the smallest |r_a - r_b|.

Where the policy cannot tell the two completions apart. In the paper it did worse than random;
it is here so that can be measured.
"""

from __future__ import annotations

from rlaif.acquisition.certainty import CertaintyAcquisition, CertaintyConfig


class UncertaintyAcquisition(CertaintyAcquisition):
    Config = CertaintyConfig
    name = "uncertainty"
    keep_largest = False
