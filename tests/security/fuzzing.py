"""Shared by the fuzzing modules: how many examples, and streams cut into pieces."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: A few hundred examples a property, no deadline (CI machines are busy), no example
#: database left in the work tree.
FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW = settings(FUZZ, max_examples=40)

cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=8)


def split(data: bytes, offsets: list[int]) -> Iterator[bytes]:
    """`data` in pieces, cut at the given offsets (taken modulo its length)."""
    points = sorted({cut % (len(data) + 1) for cut in offsets} | {0, len(data)})
    for start, end in itertools.pairwise(points):
        yield data[start:end]
