"""Micro-benchmarks of every layer variant and strategy through pytest-benchmark.

Skipped by the default test run (pyproject sets --benchmark-skip); run them with
``pytest tests/benchmarks --benchmark-only``. Shapes are tiny so the run takes seconds.
"""

import pytest
import torch

from meobench.layers import LayerConfig, LayerSet
from meobench.layers.variants import VARIANTS

CASES = [(variant, strategy) for variant, spec in VARIANTS.items() for strategy in spec.strategies()]
BATCH, SEQ_LEN = 4, 32


@pytest.fixture(scope="module")
def layers() -> LayerSet:
    config = LayerConfig(num_experts=8, top_k=2, d_model=64, d_ff=128, token_attention_reduction=16)
    return LayerSet(config, seed=0).eval()


@pytest.mark.parametrize(("variant", "strategy"), CASES, ids=[f"{v}-{s}" for v, s in CASES])
def test_forward(benchmark, layers, variant, strategy):
    module = layers.build(variant, strategy)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, SEQ_LEN, 64, generator=generator)
    mask = torch.ones(BATCH, SEQ_LEN, dtype=torch.long)
    task_ids = torch.arange(BATCH) % 4
    benchmark.group = "forward"
    benchmark.extra_info["tokens"] = BATCH * SEQ_LEN

    with torch.no_grad():
        output = benchmark(module, x, mask, task_ids)
    assert output.shape == (BATCH, SEQ_LEN, 128)
    assert torch.isfinite(output).all()
