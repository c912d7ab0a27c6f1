"""Damaged checkpoints and model files: a resume that finds nothing loadable stops and deletes nothing, a damaged
checkpoint is moved aside, and a NaN weight is named at load and never saved (docs/reliability.md)."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from minimind import MiniMindError, load_model
from minimind.train.trainer import train
from tests.conftest import make_model
from tests.train.test_trainer import config, metrics


def test_resume_skips_a_damaged_checkpoint_and_moves_it_aside(data, tmp_path, capfd):
    out = tmp_path / "run"
    train(config(data, out, max_steps=6, save_every=3, keep_last=3))
    (out / "checkpoints" / "step-000006" / "state.pt").write_bytes(b"truncated")
    train(config(data, out, max_steps=6, save_every=3, keep_last=3), resume=True)
    assert [m["step"] for m in metrics(out)][-1] == 6
    assert "checkpoint" in (err := capfd.readouterr().err) and "moved aside to damaged-step-000006" in err
    assert (out / "checkpoints" / "damaged-step-000006" / "state.pt").read_bytes() == b"truncated"   # kept


def test_resume_without_a_loadable_checkpoint_stops_and_deletes_nothing(data, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(MiniMindError, match="no checkpoint under .*start without --resume"):
        train(config(data, out, max_steps=4), resume=True)
    train(config(data, out, max_steps=4, save_every=2, keep_last=2))
    for step in ("step-000002", "step-000004"):
        (out / "checkpoints" / step / "trainer.json").write_text("{not json")
    with pytest.raises(MiniMindError, match=r"no checkpoint .* loads \(step-000004: JSONDecodeError.*step-000002: "
                                            r"JSONDecodeError.*nothing was deleted"):
        train(config(data, out, max_steps=4), resume=True)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002", "step-000004"]


def test_resume_skips_a_checkpoint_with_broken_weights(data, tmp_path):
    out = tmp_path / "run"
    train(config(data, out, max_steps=4, save_every=2, keep_last=3))
    weights_file = out / "checkpoints" / "step-000004" / "model" / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:100])
    train(config(data, out, max_steps=4, save_every=2, keep_last=3), resume=True)
    assert (out / "checkpoints" / "damaged-step-000004").is_dir()


def test_nonfinite_weights_are_refused_at_load_and_at_save(tmp_path):
    """A NaN in a weight is named at load (unless allowed, to inspect it), and no save writes one."""
    from minimind.errors import MiniMindError

    model = make_model()
    model.save(tmp_path / "m")
    tensors = load_file(tmp_path / "m" / "model.safetensors")
    tensors["model.layers.1.mlp.down_proj.weight"][3, 5] = float("nan")
    save_file(tensors, tmp_path / "m" / "model.safetensors")
    with pytest.raises(MiniMindError, match=r"tensor 'model.layers.1.mlp.down_proj.weight' holds 1 non-finite"):
        load_model(tmp_path / "m", device="cpu")
    broken = load_model(tmp_path / "m", device="cpu", allow_nonfinite=True)
    assert torch.isnan(broken.model.layers[1].mlp.down_proj.weight).sum() == 1
    with pytest.raises(MiniMindError, match=r"not saved: tensor 'model.layers.1.mlp.down_proj.weight' holds 1"):
        broken.save(tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
    with torch.no_grad():
        model.model.norm.weight[0] = 1e6                      # finite in fp32, inf in fp16
    with pytest.raises(MiniMindError, match="model.norm.weight"):
        model.save(tmp_path / "half", dtype=torch.float16)


def test_only_one_rank_moves_a_damaged_checkpoint(data, tmp_path):
    """Every rank of a resumed run reads the checkpoints; only rank 0 renames the damaged one (two renames of one
    directory used to crash the other ranks)."""
    from minimind.train import checkpoint

    out = tmp_path / "run"
    train(config(data, out, max_steps=4, save_every=2, keep_last=3))
    (out / "checkpoints" / "step-000004" / "state.pt").write_bytes(b"truncated")
    weights, _, trainer = checkpoint.load_latest(out, move_damaged=False)
    assert trainer["step"] == 2 and (out / "checkpoints" / "step-000004").is_dir()
    checkpoint.load_latest(out)
    assert not (out / "checkpoints" / "step-000004").exists() and (out / "checkpoints" / "damaged-step-000004").is_dir()
