"""How large and how random the property-based and fuzz tests are.

`make test` (and so CI) runs every randomised test deterministically: hypothesis derandomized
(each test draws from a fixed seed of its own), a bounded number of examples, no example
database, and the mutation fuzzer seeded by spec and mutation class. The same clone with the
same pinned packages (constraints.txt) therefore draws the same examples on every run, and a
new random example can never turn CI red.

`make fuzz` sets CNNSPEC_FUZZ=1: hypothesis draws at random, with FUZZ_SCALE times as many
examples, and the mutation fuzzer takes a fresh seed that it prints, so a failure can be
replayed with CNNSPEC_FUZZ_SEED. Every bug a campaign finds becomes a fixed case in the
deterministic suite (tests/regressions/).
"""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, settings

FUZZ = os.environ.get("CNNSPEC_FUZZ") == "1"
FUZZ_SCALE = int(os.environ.get("CNNSPEC_FUZZ_SCALE", "20"))
_SEED = os.environ.get("CNNSPEC_FUZZ_SEED")
# The mutation fuzzer's seed: fixed for `make test`, fresh (or CNNSPEC_FUZZ_SEED) for `make fuzz`.
FUZZ_SEED = (_SEED or str(random.SystemRandom().randrange(2**32))) if FUZZ else "ci"

_COMMON = {
    "deadline": None,
    "database": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("ci", derandomize=True, **_COMMON)
settings.register_profile("fuzz", derandomize=False, **_COMMON)
settings.load_profile("fuzz" if FUZZ else "ci")


def examples(count: int) -> int:
    """How many examples (hypothesis examples, mutants, random edits) a test runs that runs
    `count` of them in CI."""
    return count * FUZZ_SCALE if FUZZ else count
