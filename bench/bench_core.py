"""minillm vs transformers on a random checkpoint of Qwen2.5-0.5B's exact shape.

    python bench/bench_core.py                 # full run (~10 min on 2 cores)
    python bench/bench_core.py --sequences 10  # quicker

For each dtype (float32, bfloat16) and each implementation (minillm, minillm packed,
transformers), a fresh process loads the checkpoint and measures: load time, peak memory
(peak resident set beyond the process before loading; RSS after
loading shown too), forward throughput on N sequences of
200 tokens (one at a time, then in batches of 10; full logits, as `model(ids).logits`), and
greedy decoding with the KV cache (ms per new token, prefill excluded). Times are medians.
The machine's floors are measured in the same run: the forward pass's matrix products run
bare with F.linear, and one decode step's weight bytes over the measured memory bandwidth.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SEQ_LEN, BATCH, PROMPT, NEW_TOKENS = 200, 10, 20, 64
QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                  use_sliding_window=False)


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up: first calls page weights in and let the allocator settle
    return statistics.median(timed(fn) for _ in range(repeats))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


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


def worker(impl: str, dtype_name: str, folder: Path, sequences: int) -> dict:
    """Measure one implementation in this (fresh) process."""
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    data = torch.randint(0, QWEN25_05B["vocab_size"], (sequences, SEQ_LEN))
    base = rss_mb()
    start = time.perf_counter()
    if impl == "transformers":
        import transformers

        model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
        forward = lambda ids: model(ids).logits  # noqa: E731
        decode = lambda n: model.generate(data[:1, :PROMPT], max_new_tokens=n, min_new_tokens=n,  # noqa: E731
                                          do_sample=False, eos_token_id=None, pad_token_id=0)
    else:
        import minillm

        model = minillm.load_model(folder, dtype=dtype, packed=impl == "minillm-packed")
        forward = model
        decode = lambda n: minillm.generate(model, data[0, :PROMPT], max_new_tokens=n)  # noqa: E731
    load_s = time.perf_counter() - start
    loaded = rss_mb() - base

    with torch.inference_mode():
        forward(data[:BATCH])  # warm-up: page the weights in, let the allocator settle
        one = statistics.median(timed(lambda i=i: forward(data[i : i + 1])) for i in range(sequences))
        batches = [data[i : i + BATCH] for i in range(0, sequences, BATCH)]
        batched = statistics.median(timed(lambda b=b: forward(b)) for b in batches)
        first = median_time(lambda: decode(1), repeats=3)
        full = median_time(lambda: decode(NEW_TOKENS + 1), repeats=3)
    return dict(impl=impl, dtype=dtype_name, load_s=load_s, weights_mb=loaded, peak_mb=peak_mb() - base,
                fwd_one_tok_s=SEQ_LEN / one, fwd_batch_tok_s=BATCH * SEQ_LEN / batched,
                decode_ms=(full - first) / NEW_TOKENS * 1000)


def floors(dtype_name: str) -> dict:
    """This machine's floors: bare matrix products of one forward pass, and memory bandwidth."""
    import torch.nn.functional as F

    dtype, c = getattr(torch, dtype_name), QWEN25_05B
    h, i, kv = c["hidden_size"], c["intermediate_size"], 128 * c["num_key_value_heads"]
    shapes = [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)] * c["num_hidden_layers"]
    weights = [torch.randn(shape).to(dtype) for shape in shapes] + [torch.randn(c["vocab_size"], h).to(dtype)]
    n_bytes = sum(w.numel() * w.element_size() for w in weights)
    tokens = {"one": SEQ_LEN, "batch": BATCH * SEQ_LEN}
    out = {}
    with torch.inference_mode():
        for name, n in tokens.items():
            x = {h: torch.randn(n, h).to(dtype), i: torch.randn(n, i).to(dtype)}
            t = median_time(lambda: [F.linear(x[w.shape[1]], w) for w in weights], repeats=3)
            out[f"fwd_{name}_tok_s"] = n / t
        big = torch.ones(2**27)  # 512 MB, far beyond the caches
        bandwidth = big.numel() * 4 / median_time(big.sum, repeats=5)
    out.update(bandwidth_gb_s=bandwidth / 1e9, decode_ms=n_bytes / bandwidth * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=50)
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--impls", nargs="+", default=["minillm", "minillm-packed", "transformers"])
    parser.add_argument("--checkpoint", type=Path, default=Path(tempfile.gettempdir()) / "minillm-bench-qwen2.5-0.5b")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.checkpoint, args.sequences)))
        return

    folder = make_checkpoint(args.checkpoint)
    print(f"checkpoint: {folder} (random weights, Qwen2.5-0.5B shapes); torch threads: {torch.get_num_threads()}; "
          f"{args.sequences} sequences of {SEQ_LEN} tokens; decode: {NEW_TOKENS} new tokens after {PROMPT}")
    for dtype in args.dtypes:
        floor = floors(dtype)
        rows = {}
        for impl in args.impls:
            done = subprocess.run([sys.executable, __file__, "--worker", impl, dtype, "--checkpoint", str(folder),
                                   "--sequences", str(args.sequences)], capture_output=True, text=True, check=True)
            rows[impl] = json.loads(done.stdout.strip().splitlines()[-1])
        ref = rows.get("transformers")
        print(f"\n{dtype}: floors: forward {floor['fwd_one_tok_s']:.0f} tok/s one at a time, "
              f"{floor['fwd_batch_tok_s']:.0f} batched (bare F.linear); decode {floor['decode_ms']:.1f} ms/token "
              f"(weights / {floor['bandwidth_gb_s']:.1f} GB/s)")
        print(f"{'':16} {'load s':>7} {'RSS loaded':>10} {'peak MB':>8} {'fwd tok/s':>10} {'x floor':>7} "
              f"{'batch tok/s':>11} {'x floor':>7} {'decode ms':>9} {'x floor':>7} {'speed vs transformers':>22}")
        for impl, r in rows.items():
            vs = ""
            if ref:
                vs = (f"fwd {r['fwd_one_tok_s'] / ref['fwd_one_tok_s']:.2f}x "
                      f"dec {ref['decode_ms'] / r['decode_ms']:.2f}x")
            print(f"{impl:16} {r['load_s']:7.2f} {r['weights_mb']:10.0f} {r['peak_mb']:8.0f} "
                  f"{r['fwd_one_tok_s']:10.1f} {r['fwd_one_tok_s'] / floor['fwd_one_tok_s']:7.2f} "
                  f"{r['fwd_batch_tok_s']:11.1f} {r['fwd_batch_tok_s'] / floor['fwd_batch_tok_s']:7.2f} "
                  f"{r['decode_ms']:9.1f} {floor['decode_ms'] / r['decode_ms']:7.2f} {vs:>22}")


if __name__ == "__main__":
    main()
