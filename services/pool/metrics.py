"""Prometheus metrics of the pool (names fnas_pool_<what>_<unit>)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BLOCKS = Gauge("fnas_pool_blocks", "Blocks stored in the pool.")
PUTS = Counter("fnas_pool_puts_total", "PutBlocks calls accepted, by result (stored, duplicate).", ["result"])
QUERIES = Counter("fnas_pool_queries_total", "QueryBlocks calls answered.")
QUERIED = Counter("fnas_pool_blocks_queried_total", "Blocks asked for by QueryBlocks.")
MATCHED = Counter("fnas_pool_blocks_matched_total", "Queried blocks that got a match (paper 4.3 hits).")
ADAPTED = Counter(
    "fnas_pool_blocks_adapted_total", "Matched blocks whose weights had to be cropped or padded."
)
HIT_RATIO = Gauge("fnas_pool_hit_ratio", "Matched / queried blocks since the service started (paper 4.3).")
SIMILARITY = Histogram(
    "fnas_pool_match_similarity",
    "Cosine similarity of each matched block's embedding to the query's.",
    # One-hot block embeddings of the mnas space agree on 0..6 of 6 fields: k/6 steps.
    buckets=(0.0, 0.17, 0.34, 0.5, 0.67, 0.84, 0.99, 1.0),
)
MAP_SIZE = Gauge("fnas_pool_lmdb_map_size_bytes", "Current LMDB map size (it doubles when full).")

for result in ("stored", "duplicate"):
    PUTS.labels(result)
