"""Shared by the benchmarks: a random checkpoint of Qwen2.5-0.5B's shape, timing, memory, floors."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                  use_sliding_window=False)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up: first calls page weights in and let the allocator settle
    return statistics.median(timed(fn) for _ in range(repeats))


def make_checkpoint(folder: Path) -> Path:
    """A random bfloat16 checkpoint with Qwen2.5-0.5B's shapes, saved by transformers (once)."""
    if (folder / "model.safetensors").is_file():
        return folder
    import transformers

    config = transformers.Qwen2Config(**QWEN25_05B)
    with torch.device("meta"):
        model = transformers.Qwen2ForCausalLM(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    model.tie_weights()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0) if "norm" in name else p.normal_(0, 0.02, generator=gen)
    model.save_pretrained(folder)
    return folder


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MB. VmHWM (the peak
    resident set) starts afresh at exec, unlike getrusage's maxrss, which a child inherits."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def rss_mb() -> float:
    return _status_mb("VmRSS")


def peak_mb() -> float:
    return _status_mb("VmHWM")


def param_count() -> int:
    """Parameters of Qwen2.5-0.5B (tied head counted once): the bytes one decode step reads / dtype size."""
    c = QWEN25_05B
    h, i, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    per_layer = (h * h + h) + 2 * (kv * h + kv) + h * h + 3 * h * i + 2 * h
    return c["vocab_size"] * h + layers * per_layer + h


class ForwardFloor:
    """One forward pass's matrix products alone: F.linear on random weights of Qwen2.5-0.5B's
    shapes (the LM head included), for ``tokens`` rows at a time. ``run()`` times one pass."""

    def __init__(self, dtype: torch.dtype, tokens: int):
        c = QWEN25_05B
        h, i = c["hidden_size"], c["intermediate_size"]
        kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
        shapes = [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)] * c["num_hidden_layers"]
        self.weights = [torch.randn(shape).to(dtype) for shape in shapes] + [torch.randn(c["vocab_size"], h).to(dtype)]
        self.x = {h: torch.randn(tokens, h).to(dtype), i: torch.randn(tokens, i).to(dtype)}
        self.tokens = tokens

    def run(self) -> float:
        with torch.inference_mode():
            return timed(lambda: [F.linear(self.x[w.shape[1]], w) for w in self.weights])


def interleaved(floor: ForwardFloor, passes: list) -> tuple[float, float]:
    """Median seconds of each of ``passes`` and of a floor pass run just before it.

    This machine's speed drifts by 10-20% over seconds; timing the floor beside every pass
    keeps the ratio of the two honest."""
    floor.run()  # warm-up
    floor_s, pass_s = [], []
    for fn in passes:
        floor_s.append(floor.run())
        pass_s.append(timed(fn))
    return statistics.median(floor_s), statistics.median(pass_s)


def bandwidth_gb_s() -> float:
    """Memory read bandwidth: summing 512 MB of float32, far beyond the caches."""
    big = torch.ones(2**27)
    return big.numel() * 4 / median_time(big.sum, repeats=5) / 1e9
