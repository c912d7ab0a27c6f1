"""The compiled decode step for any batch: rows padded to a bucket decode as each row decodes alone, rows join and
leave between steps, and a long mixed workload compiles once per (bucket, cache capacity) met, no more."""

import random

import pytest
import torch

from minimind.infer import Engine, SamplingParams
from minimind.infer.engine import ROW_BUCKETS, compile_bound
from minimind.model.kernels import few_rows
from minimind.tokenizer import load_tokenizer
from tests.conftest import make_model

PROMPTS = [[1, 400, 2000, 33, 87, 5], [1, 77], [1, 900, 12, 3000]]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def traced_only(engine: Engine) -> Engine:
    """The engine with its decode step traced by Dynamo but run by the eager backend: the same guards, shapes and
    recompilations as Inductor's, without its code generation (seconds per shape instead of tens)."""
    engine._compiled_step = torch.compile(engine.model.decode_step, dynamic=False, fullgraph=True, backend="eager")
    return engine


def test_a_compiled_batch_decodes_each_row_as_alone(tokenizer):
    """Three rows of different lengths run as a bucket of 4 (one padding row) through Inductor's code: each row's
    greedy tokens equal its eager decoding alone, its log-probabilities within fp32 tolerance."""
    model = make_model("tiny")
    params = SamplingParams(max_new_tokens=20, temperature=0, ignore_eos=True, logprobs=0)
    engine = Engine(model, tokenizer, compile=True)
    batch = engine.generate(PROMPTS, params)
    assert engine.compiled_shapes == {(4, 128)}
    for prompt, (completion,) in zip(PROMPTS, batch, strict=True):
        alone = Engine(model, tokenizer).generate([prompt], params)[0][0]
        assert completion.token_ids == alone.token_ids
        assert completion.logprobs == pytest.approx(alone.logprobs, abs=1e-4)


@pytest.mark.parametrize("name", ["tiny", "tiny-moe"])
def test_rows_joining_and_leaving_a_compiled_batch_decode_as_if_alone(tokenizer, name):
    """A request cancelled midway, one joining with its own sampling values (n=2), and rows finishing at different
    lengths move the batch across buckets 4 → 2 → 4 → 2 → 1; every row decodes what it decodes alone."""
    model = make_model(name)
    engine = traced_only(Engine(model, tokenizer, compile=True))
    greedy = SamplingParams(max_new_tokens=14, temperature=0, ignore_eos=True)
    short = SamplingParams(max_new_tokens=6, temperature=0, ignore_eos=True)
    sampled = SamplingParams(max_new_tokens=9, temperature=0.9, top_k=50, seed=3, n=2, ignore_eos=True,
                             presence_penalty=0.5)
    alone = Engine(model, tokenizer)
    expected = {("a", 0): alone.generate([PROMPTS[0]], greedy)[0][0].token_ids,
                ("c", 0): alone.generate([PROMPTS[2]], short)[0][0].token_ids}
    expected |= {("b", j): c.token_ids for j, c in enumerate(alone.generate([PROMPTS[1]], sampled)[0])}
    batch = engine.start([PROMPTS[0], PROMPTS[2], PROMPTS[1]], [greedy, short, greedy], handles=["a", "c", "gone"])
    rows = {}
    for step in range(30):
        if step == 3:
            batch.cancel("gone")
        if step == 8:
            batch.extend(engine.start([PROMPTS[1]], [sampled], handles=["b"]))
        for row in batch.rows:
            rows[(row.request.handle, row.index)] = row
        if not batch:
            break
        batch.step()
    assert len(rows["gone", 0].out.token_ids) == 3
    assert {key: rows[key].out.token_ids for key in expected} == expected
    assert {rows_ for rows_, _ in engine.compiled_shapes} == {1, 2, 4}
    if few_rows.extension() is not None:                 # the compiled graph calls the kernel on the packed weights
        assert {type(m) for m in engine._packs} >= ({few_rows.FewRowsMoE} if model.config.is_moe else set())
        assert any(isinstance(m, few_rows.FewRowsLinear) for m in engine._packs)


def test_compilations_stay_bounded_over_a_long_mixed_workload(tokenizer):
    """Sixty requests of random lengths arriving at random steps (1–9 rows at once, caches growing past 128
    positions): the step compiles once per (bucket, capacity) it meets, and decodes what the eager engine decodes
    on the same schedule."""
    model = make_model("tiny")
    rng = random.Random(0)
    workload = [(rng.randrange(0, 200), [1] + [rng.randrange(2, 6000) for _ in range(rng.randrange(1, 40))],
                 rng.choice([4, 16, 60, 150])) for _ in range(60)]

    def run(engine: Engine) -> list[list[int]]:
        arrivals = sorted(range(len(workload)), key=lambda i: workload[i][0])
        batch, step, rows = None, 0, {}
        while arrivals or batch:
            joining = [i for i in arrivals if workload[i][0] <= step][:9 - (len(batch) if batch else 0)]
            if joining:
                arrivals = [i for i in arrivals if i not in joining]
                new = engine.start([workload[i][1] for i in joining],
                                   [SamplingParams(max_new_tokens=workload[i][2], temperature=0, ignore_eos=True)
                                    for i in joining], handles=joining)
                rows.update((row.request.handle, row) for row in new.rows)
                batch = new if batch is None else (batch.extend(new) or batch)
            if batch:
                batch.step()
                if not batch:
                    batch = None
            step += 1
        return [rows[i].out.token_ids for i in range(len(workload))]

    torch._dynamo.reset()          # no graph of an earlier test's model of the same shapes is reused (Dynamo may)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    engine = traced_only(Engine(model, tokenizer, compile=True))
    compiled = run(engine)
    compilations = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs
    assert compiled == run(Engine(model, tokenizer))
    assert {rows for rows, _ in engine.compiled_shapes} <= set(ROW_BUCKETS)
    assert {capacity for _, capacity in engine.compiled_shapes} == {128, 256}
    assert compilations == len(engine.compiled_shapes) <= 2 * 5 < compile_bound(model.config.max_position_embeddings)
