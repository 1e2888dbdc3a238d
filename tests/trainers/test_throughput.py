"""The machine-ceiling benchmark: N independent step loops against one."""

from __future__ import annotations

import math

from trainers.benchmarks.throughput import bench_ceiling


def test_bench_ceiling_reports_the_ratio_of_its_rates() -> None:
    found = bench_ceiling(model="mlp", image_size=8, workers=2, batch_size=8, steps=2, rounds=1)
    one, two = found["independent_samples_per_s_1"], found["independent_samples_per_s_2"]
    assert one > 0 and two > 0
    assert math.isclose(found["ceiling"], two / one)
