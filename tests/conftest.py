import pytest
import torch

from minimind import Transformer, preset
from minimind.model.kernels import KERNELS, use_kernels

torch.set_num_threads(1)


def make_model(name: str = "tiny", seed: int = 0, kernels: str = "auto", **overrides) -> Transformer:
    """A tiny model with a wide init (σ 0.2), so that its logits and greedy outputs vary with the input."""
    torch.manual_seed(seed)
    config = preset(name).replace(**({"initializer_range": 0.2} | overrides))
    return use_kernels(Transformer(config), kernels).eval()


@pytest.fixture(params=KERNELS)
def kernels(request) -> str:
    """Both settings of `minimind.model.kernels`: every equality test of the model runs on each."""
    return request.param


@pytest.fixture(params=["tiny", "tiny-moe"])
def model(request, kernels) -> Transformer:
    return make_model(request.param, kernels=kernels)
