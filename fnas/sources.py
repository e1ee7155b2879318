"""Where a policy sample's reward came from: the proto enum `fnas.v1.SampleSource`, and its one label."""

from __future__ import annotations

from fnas.v1.common_pb2 import (
    SAMPLE_SOURCE_BUFFER,
    SAMPLE_SOURCE_CRITIC,
    SAMPLE_SOURCE_RECALL,
    SAMPLE_SOURCE_TRAINED,
    SampleSource,
)

#: Every source a policy sample's reward can come from, in the order reports list them.
SOURCES = (SAMPLE_SOURCE_TRAINED, SAMPLE_SOURCE_CRITIC, SAMPLE_SOURCE_BUFFER, SAMPLE_SOURCE_RECALL)


def label(source: int) -> str:
    """The metric label, JSON key and plot legend of a SampleSource: 'trained', 'critic', 'buffer'..."""
    return SampleSource.Name(source).removeprefix("SAMPLE_SOURCE_").lower()
