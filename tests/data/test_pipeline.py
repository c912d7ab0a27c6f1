"""jsonl → prepare → pack → loader → model: packed conversations train exactly as they would alone."""

import json

import torch

from minimind.data.loader import PackedLoader, TokenData
from minimind.data.packing import pack_sft
from minimind.data.prepare import prepare
from minimind.tokenizer.tokenizer import DEFAULT_DIR
from tests.conftest import make_model

CHATS = [
    [{"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "2+3 = 5\n#### 5"}],
    [{"role": "user", "content": "学而时习之的下一句？"}, {"role": "assistant", "content": "不亦说乎。"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
     {"role": "assistant", "content": "Goodbye.", "reasoning_content": "They are leaving."}],
    [{"role": "user", "content": "Say yes."}, {"role": "assistant", "content": "Yes."}],
]


def test_packed_sft_loss_equals_conversations_alone(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps({"conversations": c}, ensure_ascii=False) + "\n" for c in CHATS))
    prepare([path], "sft", DEFAULT_DIR, tmp_path / "prepared", progress=False)
    data = TokenData.open(tmp_path / "prepared")
    seq_len = 96
    rows = pack_sft(data.doc_lengths, seq_len)
    assert len(rows) < len(CHATS)                                  # several conversations share a row
    loader = PackedLoader(data, rows, batch_size=len(rows), seq_len=seq_len, seed=0)
    batch = next(iter(loader))
    assert (batch["labels"][batch["input_ids"] == 0] == -100).all()   # padding is never a target

    model = make_model()
    with torch.no_grad():
        packed = model(batch["input_ids"], labels=batch["labels"], position_ids=batch["position_ids"]).loss
        total, count = 0.0, 0
        for d in range(data.num_docs):
            ids, mask = data.doc(d)
            ids = torch.tensor(ids.astype("int64"))[None]
            labels = torch.where(torch.tensor(mask.astype(bool))[None], ids, -100)
            n = int((labels[:, 1:] != -100).sum())
            total += model(ids, labels=labels).loss.item() * n
            count += n
    assert abs(packed.item() - total / count) < 1e-5
