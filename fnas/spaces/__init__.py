"""Search spaces behind one interface (`SearchSpace`), looked up by id."""

from __future__ import annotations

from functools import cache

from fnas.bounds import clip
from fnas.spaces.base import InvalidArchitecture, SearchSpace, TableEntry

NASBENCH_GRAPH_DATASETS = (
    "cora",
    "citeseer",
    "pubmed",
    "cs",
    "physics",
    "photo",
    "computers",
    "arxiv",
    "proteins",
)
SPACE_IDS = (*tuple(f"nasbench-graph/{d}" for d in NASBENCH_GRAPH_DATASETS), "mnas")


class UnknownSpace(ValueError):
    """A space id that no space answers to."""


@cache
def get(space_id: str) -> SearchSpace:
    """The space with this id; raises UnknownSpace listing the known ids."""
    if space_id == "mnas":
        from fnas.spaces.mnas import MnasSpace

        return MnasSpace()
    prefix, _, dataset = space_id.partition("/")
    if prefix == "nasbench-graph" and dataset in NASBENCH_GRAPH_DATASETS:
        try:
            from fnas.spaces.nasbench_graph import NasBenchGraphSpace
        except ModuleNotFoundError as e:  # the slim install (pool, buffer): answered as a bad space
            if e.name != "nas_bench_graph":
                raise
            raise UnknownSpace(f"space {space_id} needs nas-bench-graph: pip install 'fnas[all]'") from e

        return NasBenchGraphSpace(dataset)
    raise UnknownSpace(f"unknown space {clip(space_id)!r}; known: {', '.join(SPACE_IDS)}")


__all__ = [
    "NASBENCH_GRAPH_DATASETS",
    "SPACE_IDS",
    "InvalidArchitecture",
    "SearchSpace",
    "TableEntry",
    "UnknownSpace",
    "get",
]
