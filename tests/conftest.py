import pytest
import torch

from minimind import Transformer, preset

torch.set_num_threads(1)


def make_model(name: str = "tiny", seed: int = 0, **overrides) -> Transformer:
    """A tiny model with a wide init (σ 0.2), so that its logits and greedy outputs vary with the input."""
    torch.manual_seed(seed)
    config = preset(name).replace(**({"initializer_range": 0.2} | overrides))
    return Transformer(config).eval()


@pytest.fixture(params=["tiny", "tiny-moe"])
def model(request) -> Transformer:
    return make_model(request.param)
