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

from common import (QWEN25_05B, bandwidth_gb_s, forward_floor_tok_s, make_checkpoint, median_time, param_count,
                    peak_mb, rss_mb, timed)

SEQ_LEN, BATCH, PROMPT, NEW_TOKENS = 200, 10, 20, 64


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
    dtype = getattr(torch, dtype_name)
    bandwidth = bandwidth_gb_s()
    return dict(fwd_one_tok_s=forward_floor_tok_s(dtype, SEQ_LEN),
                fwd_batch_tok_s=forward_floor_tok_s(dtype, BATCH * SEQ_LEN), bandwidth_gb_s=bandwidth, decode_ms=param_count() * dtype.itemsize / (bandwidth * 1e9) * 1000)


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
