"""minillm vs transformers on a random checkpoint of Qwen2.5-0.5B's exact shape.

    python bench/bench_core.py                 # full run (~25 min on 2 cores)
    python bench/bench_core.py --sequences 10  # quicker

For each dtype (float32, bfloat16) and each implementation (minillm, minillm packed,
transformers), a fresh process loads the checkpoint and measures: load time, peak memory
(peak resident set beyond the process before loading; RSS after
loading shown too), forward throughput on N sequences of
200 tokens (one at a time, then in batches of 10; full logits, as `model(ids).logits`), and
greedy decoding with the KV cache (ms per new token, prefill excluded). Times are medians.
The machine's floors are measured in the same run: the forward pass's matrix products run
bare with F.linear (in each worker, one floor pass timed just before every forward pass, since
this machine's speed drifts), and one decode step's weight bytes over the measured memory
bandwidth. Peak memory is taken before the floor's weights are allocated.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import (QWEN25_05B, ForwardFloor, bandwidth_gb_s, interleaved, make_checkpoint, median_time,
                    param_count, peak_mb, rss_mb)

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
        first = median_time(lambda: decode(1), repeats=3)
        full = median_time(lambda: decode(NEW_TOKENS + 1), repeats=3)
        peak = peak_mb() - base  # before the floor's weights below
        floor_one, one = interleaved(ForwardFloor(dtype, SEQ_LEN),
                                     [lambda i=i: forward(data[i : i + 1]) for i in range(sequences)])
        floor_batch, batched = interleaved(ForwardFloor(dtype, BATCH * SEQ_LEN),
                                           [lambda i=i: forward(data[i : i + BATCH]) for i in range(0, sequences, BATCH)])
    return dict(impl=impl, dtype=dtype_name, load_s=load_s, weights_mb=loaded, peak_mb=peak,
                fwd_one_tok_s=SEQ_LEN / one, fwd_one_x_floor=floor_one / one,
                fwd_batch_tok_s=BATCH * SEQ_LEN / batched, fwd_batch_x_floor=floor_batch / batched,
                floor_one_tok_s=SEQ_LEN / floor_one, floor_batch_tok_s=BATCH * SEQ_LEN / floor_batch,
                decode_ms=(full - first) / NEW_TOKENS * 1000)


def decode_floor_ms(dtype_name: str) -> tuple[float, float]:
    """One decode step's floor: the weight bytes over this machine's measured memory bandwidth."""
    bandwidth = bandwidth_gb_s()
    return param_count() * getattr(torch, dtype_name).itemsize / (bandwidth * 1e9) * 1000, bandwidth


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
        decode_floor, bandwidth = decode_floor_ms(dtype)
        rows = {}
        for impl in args.impls:
            done = subprocess.run([sys.executable, __file__, "--worker", impl, dtype, "--checkpoint", str(folder),
                                   "--sequences", str(args.sequences)], capture_output=True, text=True, check=True)
            rows[impl] = json.loads(done.stdout.strip().splitlines()[-1])
        ref = rows.get("transformers")
        print(f"\n{dtype}: decode floor {decode_floor:.1f} ms/token (weights / {bandwidth:.1f} GB/s); forward floors "
              "(bare F.linear, timed beside each implementation's passes): " +
              ", ".join(f"{r['floor_one_tok_s']:.0f}/{r['floor_batch_tok_s']:.0f}" for r in rows.values()) +
              " tok/s one at a time/batched")
        print(f"{'':16} {'load s':>7} {'RSS loaded':>10} {'peak MB':>8} {'fwd tok/s':>10} {'x floor':>7} "
              f"{'batch tok/s':>11} {'x floor':>7} {'decode ms':>9} {'x floor':>7} {'speed vs transformers':>22}")
        for impl, r in rows.items():
            vs = ""
            if ref:
                vs = (f"fwd {r['fwd_one_tok_s'] / ref['fwd_one_tok_s']:.2f}x "
                      f"dec {ref['decode_ms'] / r['decode_ms']:.2f}x")
            print(f"{impl:16} {r['load_s']:7.2f} {r['weights_mb']:10.0f} {r['peak_mb']:8.0f} "
                  f"{r['fwd_one_tok_s']:10.1f} {r['fwd_one_x_floor']:7.2f} "
                  f"{r['fwd_batch_tok_s']:11.1f} {r['fwd_batch_x_floor']:7.2f} "
                  f"{r['decode_ms']:9.1f} {decode_floor / r['decode_ms']:7.2f} {vs:>22}")


if __name__ == "__main__":
    main()
