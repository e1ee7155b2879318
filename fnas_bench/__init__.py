"""The benchmarks of `fnas bench`: each prints figures and writes JSON and a PNG (README, Benchmarks)."""

#: Plain-then-mesh runs of each mesh seed of `fnas bench search` (`search_bench`); written here, as the
#: CLI builds its help without importing the benchmark (which loads torch).
MESH_REPEATS = 3
