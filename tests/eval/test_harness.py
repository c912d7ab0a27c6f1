"""The lm-evaluation-harness adapter: the same numbers as our evaluator, through lm-eval's own runner."""

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
lm_eval = pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from minimind.eval.bpb import bits_per_byte  # noqa: E402
from minimind.eval.choice import evaluate_choice, read_items  # noqa: E402
from minimind.eval.harness import MiniMindLM  # noqa: E402
from minimind.eval.scoring import Scorer  # noqa: E402
from minimind.infer import Engine, SamplingParams  # noqa: E402
from minimind.model import load_model  # noqa: E402
from minimind.tokenizer import load_tokenizer  # noqa: E402
from tests.conftest import make_model  # noqa: E402

WORDS = ["red", "green", "blue", "cat", "dog", "sun", "moon", "tree", "river", "stone", "seven", "twelve"]
MC_TASK = """task: minimind_toy_mc
dataset_path: json
dataset_kwargs: {{data_files: {{test: {path}}}}}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list: [{{metric: acc, aggregation: mean, higher_is_better: true}}]
"""
ROLLING_TASK = """task: minimind_toy_bpb
dataset_path: json
dataset_kwargs: {{data_files: {{test: {path}}}}}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list: [{{metric: bits_per_byte, aggregation: bits_per_byte, higher_is_better: false}}]
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lm_eval")
    make_model("tiny").save(tmp / "model")
    items = [{"question": f"Which word comes after {w}?", "choices": [WORDS[(i + k) % 12] for k in range(4)],
              "answer": i % 4} for i, w in enumerate(WORDS)]
    (tmp / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    texts = ["To be, or not to be, that is the question. " * 3, "成语“一心一意”的意思是专心。", "12 + 30 = 42"]
    (tmp / "texts.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts))
    (tmp / "tasks").mkdir()
    (tmp / "tasks" / "mc.yaml").write_text(MC_TASK.format(path=tmp / "items.jsonl"))
    (tmp / "tasks" / "bpb.yaml").write_text(ROLLING_TASK.format(path=tmp / "texts.jsonl"))
    return tmp, texts


def test_adapter_methods_equal_ours(setup):
    tmp, texts = setup
    lm = MiniMindLM(pretrained=str(tmp / "model"), window=32)
    ours = Scorer(load_model(tmp / "model"), load_tokenizer(), window=32)
    pairs = [("Question: Which word?\nAnswer:", " red"), ("Hello", " world"), ("", "Plain text.")]
    requests = [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)]
    assert lm.loglikelihood(requests) == ours.loglikelihood(pairs)
    rolling = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)])
    assert rolling == [ours.rolling(t) for t in texts]
    gen = lm.generate_until([Instance("generate_until", {}, ("Once upon a time", {"until": ["\n\n"],
                                                                                   "max_gen_toks": 12}), 0)])
    engine = Engine(ours.model, ours.tokenizer)
    expected = engine.generate([ours.prefix + ours.tokenizer.encode("Once upon a time")],
                               SamplingParams(max_new_tokens=12, temperature=0.0, stop=["\n\n"]))[0][0].text
    assert gen == [expected]


def test_lm_eval_run_matches_our_evaluator(setup):
    tmp, texts = setup
    out = lm_eval.simple_evaluate(model="minimind", model_args=f"pretrained={tmp / 'model'},window=32",
                                  tasks=["minimind_toy_mc", "minimind_toy_bpb"],
                                  task_manager=TaskManager(include_path=str(tmp / "tasks")))
    scorer = Scorer(load_model(tmp / "model"), load_tokenizer(), window=32)
    ours = evaluate_choice(scorer, read_items(tmp / "items.jsonl"))
    assert out["results"]["minimind_toy_mc"]["acc,none"] == pytest.approx(ours["acc"]["value"])
    bpb = bits_per_byte(scorer, texts)["bpb"]["value"]
    assert out["results"]["minimind_toy_bpb"]["bits_per_byte,none"] == pytest.approx(bpb, rel=1e-6)
