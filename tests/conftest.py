import pytest
import torch

from meobench.layers import LayerConfig, LayerSet


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def make_layers(**overrides) -> LayerSet:
    """A small LayerSet with fp32 weights; keyword arguments override LayerConfig fields."""
    fields = dict(num_experts=4, top_k=2, d_model=32, d_ff=48, token_attention_reduction=8)
    fields.update(overrides)
    return LayerSet(LayerConfig(**fields), seed=0)


@pytest.fixture(autouse=True)
def _calibration_cache(tmp_path_factory, monkeypatch):
    """Keep tests away from the user's calibration cache."""
    monkeypatch.setenv("MEOBENCH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "meobench-cache"))
