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


def forward_floor_tok_s(dtype: torch.dtype, tokens: int, repeats: int = 3) -> float:
    """Tokens/s of one forward pass's matrix products alone (F.linear on random weights of
    Qwen2.5-0.5B's shapes, the LM head included), for ``tokens`` rows at a time."""
    c = QWEN25_05B
    h, i = c["hidden_size"], c["intermediate_size"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    shapes = [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)] * c["num_hidden_layers"]
    weights = [torch.randn(shape).to(dtype) for shape in shapes] + [torch.randn(c["vocab_size"], h).to(dtype)]
    x = {h: torch.randn(tokens, h).to(dtype), i: torch.randn(tokens, i).to(dtype)}
    with torch.inference_mode():
        return tokens / median_time(lambda: [F.linear(x[w.shape[1]], w) for w in weights], repeats)


def bandwidth_gb_s() -> float:
    """Memory read bandwidth: summing 512 MB of float32, far beyond the caches."""
    big = torch.ones(2**27)
    return big.numel() * 4 / median_time(big.sum, repeats=5) / 1e9
