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


@torch.no_grad()
def assert_packed_rows_equal_each_document_alone(model, lengths=(11, 8)):
    """Documents packed in one row (position_ids restarting at 0) give the logits each gives alone; returns the packed
    ids, their position_ids and logits."""
    docs = [torch.randint(30, 400, (1, n)) for n in lengths]
    packed, positions = torch.cat(docs, 1), torch.cat([torch.arange(n) for n in lengths])[None]
    logits = model(packed, position_ids=positions).logits
    start = 0
    for doc in docs:
        torch.testing.assert_close(logits[:, start:start + doc.shape[1]], model(doc).logits, atol=1e-5, rtol=1e-5)
        start += doc.shape[1]
    return packed, positions, logits
