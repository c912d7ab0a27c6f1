import pytest
import torch
import torch.nn.functional as F

from minimind import KVCache
from minimind.model import layers, transformer
from minimind.model.layers import RMSNorm, first_key_block, matmul_attention, single_query_attention
from minimind.model.rope import apply_rope
from minimind.model.transformer import document_block_mask
from tests.conftest import make_model


def test_causality(model):
    x = torch.randint(0, 6400, (2, 24))
    y = x.clone()
    y[:, 16:] = torch.randint(0, 6400, (2, 8))
    with torch.no_grad():
        a, b = model(x).logits, model(y).logits
    torch.testing.assert_close(a[:, :16], b[:, :16], atol=1e-6, rtol=0)
    assert (a[:, 16:] - b[:, 16:]).abs().max() > 1e-2       # the changed tokens do matter


def test_kv_cache_decoding_equals_full_forward(model):
    x = torch.randint(0, 6400, (2, 20))
    with torch.no_grad():
        full = model(x).logits
        cache = KVCache(model.config, batch_size=2, max_len=32)
        steps = [model(x[:, :8], cache=cache).logits]                    # prefill
        steps += [model(x[:, 8:12], cache=cache).logits]                 # a chunk after a prefix
        steps += [model(x[:, t:t + 1], cache=cache).logits for t in range(12, 20)]   # one token at a time
    assert cache.length == 20
    assert (torch.cat(steps, dim=1) - full).abs().max() <= 1e-5


def test_kv_cache_overflow_is_an_error():
    model = make_model()
    cache = KVCache(model.config, batch_size=1, max_len=4)
    with pytest.raises(ValueError, match="holds 4 positions"):
        model(torch.zeros(1, 5, dtype=torch.long), cache=cache)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_rows_alone(model, side):
    rows = [torch.randint(3, 6400, (n,)) for n in (12, 7, 3)]
    T = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(T - len(r), T) if side == "left" else slice(0, len(r))
        ids[i, sl], mask[i, sl] = r, 1
    with torch.no_grad():
        batch = model(ids, attention_mask=mask).logits
        for i, r in enumerate(rows):
            alone = model(r[None]).logits[0]
            got = batch[i][mask[i].bool()]
            assert (got - alone).abs().max() <= 1e-5
        assert torch.isfinite(batch).all()


def test_left_padded_decoding_with_cache(model):
    """A left-padded batch decoded through the cache equals each row's full forward."""
    rows = [torch.randint(3, 6400, (n,)) for n in (9, 4)]
    T, new = 9, 5
    ids = torch.zeros(2, T, dtype=torch.long)
    mask = torch.zeros(2, T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r):], mask[i, T - len(r):] = r, 1
    cont = torch.randint(3, 6400, (2, new))
    with torch.no_grad():
        cache = KVCache(model.config, 2, T + new)
        out = [model(ids, attention_mask=mask, cache=cache).logits[:, -1:]]
        for t in range(new - 1):
            mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
            out.append(model(cont[:, t:t + 1], attention_mask=mask, cache=cache).logits)
        got = torch.cat(out, dim=1)
        for i, r in enumerate(rows):
            full = model(torch.cat([r, cont[i, :new - 1]])[None]).logits[0, len(r) - 1:]
            assert (got[i] - full).abs().max() <= 1e-5


def test_loss_is_shifted_cross_entropy(model):
    x = torch.randint(0, 6400, (2, 16))
    labels = x.clone()
    labels[0, :5] = -100
    out = model(x, labels=labels)
    assert out.logits is None                      # the fused loss never builds the batch's logits
    logits = model(x).logits
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 6400), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected + out.aux_loss)
    total = model(x, labels=labels, reduction="sum").loss
    torch.testing.assert_close(total, expected * (labels[:, 1:] != -100).sum())
    if model.config.is_moe:
        assert out.aux_loss > 0
    else:
        assert out.aux_loss == 0


def test_loss_without_targets_is_zero_not_nan():
    model = make_model()
    x = torch.randint(0, 6400, (1, 8))
    assert model(x, labels=torch.full_like(x, -100)).loss.item() == 0.0


def test_logits_to_keep(model):
    x = torch.randint(0, 6400, (2, 10))
    with torch.no_grad():
        full = model(x).logits
        last = model(x, logits_to_keep=3).logits
        with_loss = model(x, labels=x, logits_to_keep=1)
    assert last.shape == (2, 3, 6400)
    torch.testing.assert_close(last, full[:, -3:])
    torch.testing.assert_close(with_loss.logits, full[:, -1:])


def test_gradients_reach_every_parameter(model):
    model.train()
    x = torch.randint(0, 6400, (2, 32))
    model(x, labels=x).loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_bf16_autocast_is_close_to_fp32(model):
    x = torch.randint(0, 6400, (2, 16))
    with torch.no_grad():
        ref = model(x, labels=x).loss
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(x, labels=x).loss
    assert torch.isfinite(half) and abs(half.item() - ref.item()) < 0.05 * ref.item()


def test_half_precision_model_keeps_fp32_rope():
    model = make_model().to(torch.bfloat16)
    assert model.model.rotary.inv_freq.dtype == torch.float32
    x = torch.randint(0, 6400, (1, 8))
    assert model(x).logits.dtype == torch.bfloat16


def test_init_is_documented_scale():
    model = make_model(initializer_range=0.02)     # conftest widens σ; restore the default here
    q = model.model.layers[0].self_attn.q_proj.weight
    o = model.model.layers[0].self_attn.o_proj.weight
    assert abs(q.std().item() - 0.02) < 0.002
    assert abs(o.std().item() - 0.02 / 2) < 0.002     # σ/√(2·layers), layers = 2
    assert (model.model.norm.weight == 1).all()
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_flops_per_token():
    model = make_model()
    c = model.config
    n = model.num_params()
    norms = (2 * c.hidden_size + 2 * c.head_dim) * c.num_hidden_layers + c.hidden_size
    assert model.flops_per_token(100) == 6 * (n - norms) + 12 * 2 * 4 * 16 * 100


def test_packed_documents_do_not_see_each_other(model):
    docs = [torch.randint(3, 6400, (n,)) for n in (7, 5, 4)]
    ids = torch.cat(docs)[None]
    positions = torch.cat([torch.arange(len(d)) for d in docs])[None]
    with torch.no_grad():
        packed = model(ids, position_ids=positions).logits[0]
        start = 0
        for d in docs:
            alone = model(d[None]).logits[0]
            assert (packed[start:start + len(d)] - alone).abs().max() <= 1e-5
            start += len(d)
        # without position_ids the same row is one long document: later documents do change
        assert (model(ids).logits[0, 7:] - packed[7:]).abs().max() > 1e-3


def packed_positions(*lengths_per_row: tuple[int, ...]) -> torch.Tensor:
    """position_ids [B, T] of packed rows: each row's documents have the given lengths (0, 1, … per document)."""
    return torch.stack([torch.cat([torch.arange(n) for n in lengths]) for lengths in lengths_per_row])


def test_document_block_mask_equals_the_dense_document_mask():
    """The flex-attention mask of packed rows (the GPU path) allows exactly the pairs the dense mask does, and
    skips the 128 × 128 tiles that lie wholly across documents."""
    positions = packed_positions((100, 200, 1, 99), (256, 144))
    dense = transformer._document_mask(positions)                         # [B, 1, T, T]
    block_mask = document_block_mask(positions)
    assert block_mask.shape == (2, 1, 400, 400)
    mask_mod = block_mask.mask_mod
    b, q, k = torch.meshgrid(torch.arange(2), torch.arange(400), torch.arange(400), indexing="ij")
    assert torch.equal(mask_mod(b, torch.zeros_like(b), q, k), dense[:, 0])
    # row 1: documents [0, 256) and [256, 400); the tile of queries 256–383 × keys 0–127 is skipped
    tiles = block_mask.to_dense()[1, 0]
    assert tiles[2, 0] == 0 and tiles[2, 2] == 1 and tiles[0, 1] == 0


@torch.no_grad()
def test_packed_rows_through_flex_attention_equal_the_dense_mask(monkeypatch):
    """The model's GPU path for packed rows, run on the CPU (flex attention has no CPU backward, so forward
    only): the logits equal those of the dense document mask, for a dense and an MoE model, with GQA."""
    positions = packed_positions((20, 50, 30), (64, 36))
    for name in ("tiny", "tiny-moe"):
        model = make_model(name)
        ids = torch.randint(3, 6400, positions.shape)
        dense = model(ids, position_ids=positions).logits
        monkeypatch.setattr(transformer, "FLEX_ATTENTION_DEVICES", {"cpu"})
        flex = model(ids, position_ids=positions).logits
        monkeypatch.undo()
        torch.testing.assert_close(flex, dense, atol=2e-5, rtol=2e-5)


@pytest.mark.slow
@torch.no_grad()
def test_compiled_model_traces_the_block_mask_and_flex_attention(monkeypatch):
    """compile=true on a GPU compiles the whole model: building the BlockMask and flex attention trace in one graph
    (fullgraph), checked here on the CPU, forward only; the logits equal the eager dense-mask ones."""
    positions = packed_positions((20, 50, 30), (64, 36))
    model = make_model()
    ids = torch.randint(3, 6400, positions.shape)
    dense = model(ids, position_ids=positions).logits
    monkeypatch.setattr(transformer, "FLEX_ATTENTION_DEVICES", {"cpu"})
    flex = torch.compile(model, fullgraph=True)(ids, position_ids=positions).logits
    torch.testing.assert_close(flex, dense, atol=2e-5, rtol=2e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex attention's backward runs on a GPU only")
@pytest.mark.parametrize("checkpointing", [False, True])
def test_flex_attention_gradients_equal_the_dense_mask_on_cuda(monkeypatch, checkpointing):
    """On CUDA, packed rows take flex attention; loss and gradients equal SDPA with the dense document mask, also
    with activation checkpointing (the BlockMask passes through `checkpoint` into every block)."""
    positions = packed_positions((300, 212), (512,)).cuda()
    model = make_model().cuda().train()
    if checkpointing:
        transformer.checkpoint_blocks(model)
    ids = torch.randint(3, 6400, positions.shape, device="cuda")
    results = []
    for devices in ({"cuda"}, set()):
        monkeypatch.setattr(transformer, "FLEX_ATTENTION_DEVICES", devices)
        model.zero_grad()
        loss = model(ids, labels=ids, position_ids=positions).loss
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (loss_flex, grads_flex), (loss_dense, grads_dense) = results
    torch.testing.assert_close(loss_flex, loss_dense, atol=1e-4, rtol=1e-4)
    for a, b in zip(grads_flex, grads_dense, strict=True):
        torch.testing.assert_close(a, b, atol=1e-3 * b.abs().max().item(), rtol=0)


@pytest.mark.parametrize("mask_rows", [0, 1, 3])
def test_single_query_attention_equals_sdpa(mask_rows):
    """Decoding's attention path: grouped heads, a per-row key mask (or one shared row, or none), fp32 softmax."""
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 4, 1, 16), torch.randn(3, 2, 9, 16), torch.randn(3, 2, 9, 16)
    mask = torch.rand(mask_rows, 1, 1, 9) > 0.4 if mask_rows else None
    if mask is not None:
        mask[..., -1] = True                                    # the row's own new key
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    torch.testing.assert_close(single_query_attention(q, k, v, mask), want)
    got = single_query_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("block", [128, 5])
@pytest.mark.parametrize("masked", ["causal", "documents"])
def test_matmul_attention_values_and_gradients_equal_sdpa(masked, block, monkeypatch):
    """Training's CPU bf16 attention, checked in float64 so that a wrong backward formula cannot hide in rounding:
    grouped heads (4 query heads on 2 key heads), a non-contiguous q as the model passes it, causal or per-row
    document masks, one block of query rows or blocks of 5 (the last one short) that see only earlier keys."""
    monkeypatch.setattr(layers, "MATMUL_ATTENTION_BLOCK", block)
    torch.manual_seed(0)
    B, T = 2, 12
    q = torch.randn(B, T, 4, 8, dtype=torch.float64).transpose(1, 2).requires_grad_()
    k, v = (torch.randn(B, 2, T, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    mask = None
    if masked == "documents":
        doc = torch.tensor([[0] * 5 + [1] * 7, [0] * 9 + [1] * 3])
        mask = (torch.ones(T, T, dtype=torch.bool).tril() & (doc[:, :, None] == doc[:, None, :]))[:, None]
    grad_out = torch.randn(B, 4, T, 8, dtype=torch.float64)
    results = []
    for attend in (lambda: matmul_attention(q, k, v, mask),
                   lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                                          enable_gqa=True)):
        out = attend()
        grads = torch.autograd.grad(out, (q, k, v), grad_out)
        results.append((out, *grads))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_fused_norm_and_rope_backward_equals_autograd(dtype, rope, monkeypatch):
    """RMSNorm's eager training path (`_NormRope`, a hand-written backward) against autograd through the same
    formula (the path torch.compile traces) and, in float64, against Qwen3's formula written out, with q/k's rope
    or without: float64, so that a wrong backward cannot hide in rounding, and bf16 input as under autocast (the
    norm rounded to bf16 before the weight), output in bf16. Without gradients the output is the same to the bit,
    so that a policy and its no-grad reference agree exactly."""
    torch.manual_seed(0)
    B, T, H, d = 2, 5, 3, 8
    x = torch.randn(B, T, H, d, dtype=torch.float64).to(dtype).requires_grad_()
    norm = RMSNorm(d, 1e-6).to(torch.float64 if dtype == torch.float64 else torch.float32)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    freqs = torch.randn(1, T, d // 2, dtype=torch.float64)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = (emb.cos(), emb.sin()) if rope else (None, None)
    grad_y = torch.randn(B, T, H, d, dtype=torch.float64).to(dtype)
    results = []
    for compiling in (False, True):
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda compiling=compiling: compiling)
        y = norm(x, cos, sin, dtype)
        assert y.dtype == dtype
        results.append((y, *torch.autograd.grad(y, (x, norm.weight), grad_y)))
    with torch.no_grad():
        assert torch.equal(norm(x, cos, sin, dtype), results[0][0])
    if dtype == torch.float64:
        want = norm.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        want = apply_rope(want, cos, sin) if rope else want
        torch.testing.assert_close(results[0][0], want, atol=1e-12, rtol=1e-12)
    tolerance = dict(atol=1e-10, rtol=1e-10) if dtype == torch.float64 else dict(atol=2e-2, rtol=2e-2)
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got.double(), want.double(), **tolerance)


def test_a_block_of_query_rows_skips_the_key_blocks_before_its_documents(monkeypatch):
    monkeypatch.setattr(layers, "MATMUL_ATTENTION_BLOCK", 4)
    doc = torch.tensor([[0] * 6 + [1] * 10, [0] * 11 + [1] * 5])            # documents start at 6 and 11
    allowed = (torch.ones(16, 16, dtype=torch.bool).tril() & (doc[:, :, None] == doc[:, None, :]))[:, None, None]
    assert first_key_block(allowed[..., 12:16, :16]) == 4                   # row 0 still sees key 6 → block 4
    assert first_key_block(allowed[1:, ..., 12:16, :16]) == 8               # row 1 alone: key 11 → block 8
    assert first_key_block(allowed[..., 0:4, :4]) == 0


def test_bf16_cpu_training_uses_matmul_attention_up_to_its_length(monkeypatch):
    """The model routes bf16 CPU attention without a cache through matmul_attention when T is at most
    MATMUL_ATTENTION_MAX_T, and through SDPA above it; both give the same loss and gradients within bf16."""
    model = make_model()
    x = torch.randint(0, 6400, (2, 16))
    calls = []
    monkeypatch.setattr(layers, "matmul_attention",
                        lambda *args: calls.append(args[0].dtype) or matmul_attention(*args))
    results = []
    for max_t in (16, 15):
        monkeypatch.setattr(layers, "MATMUL_ATTENTION_MAX_T", max_t)
        model.zero_grad()
        with torch.autocast("cpu", torch.bfloat16):
            loss = model(x, labels=x).loss
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert calls == [torch.bfloat16] * model.config.num_hidden_layers
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, atol=2e-3, rtol=0)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, atol=3e-2 * b.abs().max().item(), rtol=0)


def test_compiled_bf16_cpu_training_step_equals_eager():
    """torch.compile traces the CPU bf16 training path (matmul_attention's blocks, the norms' `norm_rope`):
    the same loss and gradients as eager, within bf16. One layer, to keep compilation short."""
    model = make_model(num_hidden_layers=1)
    x = torch.randint(0, 6400, (2, 16))
    results = []
    for forward in (model, torch.compile(model)):
        model.zero_grad()
        with torch.autocast("cpu", torch.bfloat16):
            loss = forward(x, labels=x).loss
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, atol=1e-2, rtol=0)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, atol=5e-2 * b.abs().max().item(), rtol=0)
