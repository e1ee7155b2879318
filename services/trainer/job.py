"""One `mnas` train job, start to end, inside the process that holds torch (the trainer's child).

build the model from the tokens -> ask the pool for its blocks (AKP, paper 4.3) and load the matches ->
train for the task's fixed step count -> recalibrate BatchNorm -> accuracy on the held-out split ->
Mult-Adds and params (analytic) -> latency at batch 1 -> the trained blocks for the pool.

The pool is reached through a callback (`query`), so this module never talks gRPC: the child asks its parent,
which owns the channel. Invalid jobs (bad tokens, a dataset that cannot be read) raise ValueError.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from fnas import datasets, spaces
from fnas.mnasnet import MnasNet, build_model
from fnas.reward import RewardFn
from fnas.spaces.mnas import count_mult_adds, count_params
from fnas.v1 import common_pb2, pool_pb2, queue_pb2
from services.pool.client import weights
from services.trainer import latency, train_loop

log = logging.getLogger(__name__)

Query = Callable[[pool_pb2.QueryBlocksRequest], pool_pb2.QueryBlocksResponse]


@dataclass(frozen=True)
class Settings:
    """The trainer's training setup (from TrainerConfig); plain values, so it travels as JSON."""

    device: str = "auto"
    amp: str = "auto"
    width_mult: float = 0.5
    image_side: int = 16
    val_fraction: float = 0.2
    data_seed: int = 0
    batch_size: int = 128
    lr: float = 0.01
    weight_decay: float = 1e-4
    latency: str = "measured"
    latency_warmup: int = 5
    latency_repeats: int = 20
    latency_table: str = ""
    torch_threads: int = 1

    def recipe(self) -> train_loop.Recipe:
        return train_loop.Recipe(batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class JobOutput:
    """What one job produced; `put` holds the trained blocks for the pool (None when the pool is not used)."""

    accuracy: float
    latency_ms: float
    mult_adds: int
    params: int
    iterations: int
    losses: list[float]
    #: Epochs trained: task.epochs, or task.pool_epochs for a sample warm from the pool (AKP).
    epochs: int = 0
    pool_blocks_matched: int = 0
    pool_blocks_queried: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    put: pool_pb2.PutBlocksRequest | None = None
    #: The trained model itself (in-process callers such as `fnas export`; never sent between processes).
    model: MnasNet | None = None


class JobRunner:
    """Runs jobs in this process; keeps each dataset on the device between jobs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        torch.set_num_threads(settings.torch_threads)
        self.device = train_loop.pick_device(settings.device)
        self.bf16 = train_loop.use_bf16(self.device, settings.amp)
        self._data: dict[str, train_loop.DeviceData] = {}
        table = Path(settings.latency_table) if settings.latency_table else None
        self.table = latency.LatencyTable(table, settings.latency_warmup, settings.latency_repeats)

    def data(self, name: str) -> train_loop.DeviceData:
        """The dataset on the device, loaded once per process (ValueError for bad names or data)."""
        if name not in self._data:
            s = self.settings
            raw = datasets.load(name, seed=s.data_seed, val_fraction=s.val_fraction, image_side=s.image_side)
            self._data[name] = train_loop.to_device(raw, self.device, s.image_side)
        return self._data[name]

    def model(self, tokens, data: train_loop.DeviceData, seed: int) -> MnasNet:
        """A freshly initialised model (seeded) on the device, channels_last."""
        torch.manual_seed(seed)
        model = build_model(tokens, data.num_classes, data.input_shape, self.settings.width_mult)
        return model.to(self.device, memory_format=torch.channels_last)

    def run(self, job: queue_pb2.TrainJob, query: Query | None = None) -> JobOutput:
        """Trains and evaluates one job; `query` (None: no pool) answers the AKP block query."""
        t0 = time.perf_counter()
        space = spaces.get(job.architecture.space)
        if space.id != "mnas":
            raise ValueError(f"this trainer trains the mnas space, not {space.id}")
        tokens = space.validate(job.architecture.tokens)
        dataset = datasets.check_name(job.task.dataset)
        data = self.data(dataset)
        recipe = self.settings.recipe()
        epochs = job.task.epochs
        iterations = train_loop.iterations_for(epochs, len(data.y_train), recipe)
        model = self.model(tokens, data, job.seed)
        matched = queried = 0
        if query is not None:
            request = pool_pb2.QueryBlocksRequest(
                architecture=job.architecture,
                task=job.pool_task or dataset,
                iterations=iterations,  # paper 4.3 fairness: prefer blocks trained for the standard count
                blocks=weights.block_queries(model.blocks),
                seed=job.seed,
            )
            response = query(request)
            queried = len(request.blocks)
            matched = len(weights.load_matches(model.blocks, response.matches))
            model.to(self.device, memory_format=torch.channels_last)  # loaded tensors come in contiguous
            if job.task.pool_epochs and matched == queried:  # warm from the pool: AKP's shorter schedule
                epochs = job.task.pool_epochs
                iterations = train_loop.iterations_for(epochs, len(data.y_train), recipe)
        t1 = time.perf_counter()
        stats = train_loop.train(model, data, iterations, recipe, job.seed, self.bf16)
        t2 = time.perf_counter()
        train_loop.recalibrate_bn(model, data.x_train, recipe.bn_recalibration_images, self.bf16)
        acc = train_loop.accuracy(model, data.x_val, data.y_val, self.bf16)
        shape, classes, width = data.input_shape, data.num_classes, self.settings.width_mult
        lat = self.latency(model, shape)
        t3 = time.perf_counter()
        out = JobOutput(
            accuracy=acc,
            latency_ms=lat,
            mult_adds=count_mult_adds(tokens, shape, classes, width),
            params=count_params(tokens, shape, classes, width),
            iterations=iterations,
            losses=stats.losses,
            epochs=epochs,
            pool_blocks_matched=matched,
            pool_blocks_queried=queried,
            seconds={"setup": t1 - t0, "train": t2 - t1, "evaluate": t3 - t2},
        )
        if query is not None:
            out.put = pool_pb2.PutBlocksRequest(
                architecture=job.architecture,
                task=dataset,
                source_job_id=job.job_id,
                blocks=weights.put_blocks(model.blocks, iterations),
            )
        out.model = model
        return out

    def latency(self, model: MnasNet, input_shape: tuple[int, int, int]) -> float:
        """Batch-1 latency in ms by the configured mode (0 for "none")."""
        s = self.settings
        if s.latency == "none":
            return 0.0
        if s.latency == "table":
            return self.table.model_latency(model, input_shape, self.bf16)
        return latency.model_latency(
            model, input_shape, self.device, s.latency_warmup, s.latency_repeats, self.bf16
        )


def reward_of(out: JobOutput, spec: common_pb2.RewardSpec) -> common_pb2.Reward:
    """The Reward message of a job's output, with its value from paper Eq. 2."""
    reward = common_pb2.Reward(
        accuracy=out.accuracy, latency_ms=out.latency_ms, mult_adds=out.mult_adds, params=out.params
    )
    return RewardFn.from_spec(spec).fill(reward)
