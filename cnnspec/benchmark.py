"""`cnnspec bench`: latency and throughput of an exported model under onnxruntime with full
graph optimisation, at batch 1 and batch 32, and what survives the optimiser."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnspec.predict import session_for


@dataclass
class Timing:
    batch: int
    median_ms: float
    p90_ms: float

    @property
    def images_per_second(self) -> float:
        return self.batch / (self.median_ms / 1000)


@dataclass
class BenchReport:
    provider: str
    timings: list[Timing]
    optimised_ops: Counter[str]


def bench(model_path: Path, provider: str = "auto", calls: int = 200) -> BenchReport:
    import onnx
    import onnxruntime

    with tempfile.TemporaryDirectory() as folder:
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(folder, "optimised.onnx"))
        # The optimised model is saved with its weights in a file of their own, as a model
        # over protobuf's 2 GiB must be (see cnnspec.export); only its nodes are read back.
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", "optimised.onnx.data"
        )
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )
        session, preprocessing, ran = session_for(model_path, provider, options)
        optimised = onnx.load(options.optimized_model_filepath, load_external_data=False)
    ops = Counter(node.op_type for node in optimised.graph.node)
    shape = (
        (preprocessing.channels, preprocessing.height, preprocessing.width)
        if preprocessing.layout == "nchw"
        else (preprocessing.height, preprocessing.width, preprocessing.channels)
    )
    name = session.get_inputs()[0].name
    timings = []
    for batch, repeats in ((1, calls), (32, max(10, calls // 10))):
        x = np.random.default_rng(0).normal(0, 1, (batch, *shape)).astype(np.float32)
        for _ in range(5):  # warm up: allocations, thread pools, caches
            session.run(None, {name: x})
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            session.run(None, {name: x})
            samples.append((time.perf_counter() - started) * 1000)
        deciles = statistics.quantiles(samples, n=10)
        timings.append(Timing(batch, statistics.median(samples), deciles[-1]))
    return BenchReport(ran, timings, ops)
