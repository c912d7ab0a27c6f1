"""The measured matmul peak: a slow dtype is timed on a smaller matrix instead of stalling the start of a run."""

from minimind.perf import matmul_size


def test_matmul_size_shrinks_for_a_slow_dtype():
    assert matmul_size(0.00005, 2048, budget=0.05) == 2048       # fast fp32 / bf16: the full size
    assert matmul_size(0.012, 2048, budget=0.05) == 256           # fp16 on a CPU: 256² already takes 12 ms
    assert matmul_size(0.001, 2048, budget=0.05) == 512           # 512² ≈ 8 ms fits, 1024² ≈ 64 ms does not
    assert matmul_size(0.0, 1024, budget=1.0) == 1024             # never above n


def test_fp16_on_the_cpu_reports_no_mfu(capfd):
    import torch

    from minimind.train.trainer import _measured_peak

    assert _measured_peak(torch.float16, "cpu") is None
    assert "no MFU is reported" in capfd.readouterr().err
