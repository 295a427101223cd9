"""Scoring 50 stories: minillm's score_many against the loop a student writes with transformers.

    python bench/bench_scoring.py               # bfloat16 and float32 (~5 min on 2 cores)
    python bench/bench_scoring.py --dtypes bfloat16

The model is a random checkpoint of Qwen2.5-0.5B's exact shape with the real Qwen2.5
tokenizer; the stories are real TinyStories text from ../shared/data (paragraphs joined into
story-sized pieces of ~200 tokens). The student loop, in the same dtype:

    for text in stories:
        ids = tokenizer(text, return_tensors="pt").input_ids
        logprobs = model(ids).logits.log_softmax(-1)
        token_logprobs = logprobs[0, :-1].gather(-1, ids[0, 1:, None])

Each implementation runs in a fresh process: load, warm up (one pass over the stories, which
pages the weights in), reset the peak-memory mark, then score every story, three times over;
reported are scored tokens per second (median pass) and the peak resident memory beyond the
warmed-up model (and the floor's weights). The floor is the forward pass's matrix products run
bare (F.linear) at the stories' mean length, timed in the same process just before each pass
(ten floor passes), since this machine's speed drifts; "x floor" is the median over passes of
the pass's tokens/s over its floor's.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import SHARED, ForwardFloor, make_checkpoint, peak_mb, rss_mb

STORY_CHARS = 900  # ~200 Qwen tokens of TinyStories text


def stories(n: int) -> list[str]:
    paragraphs = [p.strip() for p in (SHARED / "text" / "tinystories_validation_head.txt").read_text().split("\n\n")]
    out, current = [], ""
    for p in paragraphs:
        current = f"{current}\n\n{p}" if current else p
        if len(current) >= STORY_CHARS:
            out.append(current)
            current = ""
        if len(out) == n:
            return out
    raise SystemExit(f"only {len(out)} stories of {STORY_CHARS} characters in the shared text")


def add_tokenizer(folder: Path) -> Path:
    """Put the real Qwen2.5 tokenizer files beside the random weights."""
    if not (folder / "tokenizer.json").is_file():
        src = SHARED / "qwen2.5-tokenizer"
        (folder / "tokenizer.json").write_bytes(gzip.decompress((src / "tokenizer.json.gz").read_bytes()))
        shutil.copy(src / "tokenizer_config.json", folder)
    return folder


def reset_peak() -> None:
    """Start the kernel's peak-RSS mark (VmHWM) afresh from the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")


def worker(impl: str, dtype_name: str, folder: Path, n: int, repeats: int) -> dict:
    dtype = getattr(torch, dtype_name)
    texts = stories(n)
    with torch.inference_mode():
        if impl == "student":
            import transformers

            tok = transformers.AutoTokenizer.from_pretrained(folder)
            model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()

            def run(texts):
                total = 0.0, 0
                for text in texts:
                    ids = tok(text, return_tensors="pt").input_ids
                    logprobs = model(ids).logits.log_softmax(-1)
                    picked = logprobs[0, :-1].gather(-1, ids[0, 1:, None])
                    total = total[0] + picked.float().sum().item(), total[1] + picked.numel()
                return total
        else:
            import minillm
            from minillm.inference.scoring import score_many

            tok = minillm.load_tokenizer(folder)
            model = minillm.load_model(folder, dtype=dtype, packed=impl == "minillm-packed")

            def run(texts):
                results = score_many(model, tok, texts, top_k=0)
                return -sum(r.total_nll for r in results), sum(r.n_tokens for r in results)

        logprob_sum, n_tokens = run(texts)  # warm-up: pages the weights in
        floor = ForwardFloor(dtype, round(n_tokens / n) + 1)  # + 1: the first token is fed, not scored
        floor.run()
        base = rss_mb()
        reset_peak()
        speeds, floors = [], []
        for _ in range(repeats):  # whole passes, each beside its own floor
            floors.append(10 * floor.tokens / sum(floor.run() for _ in range(10)))
            start = time.perf_counter()
            logprob_sum, n_tokens = run(texts)
            speeds.append(n_tokens / (time.perf_counter() - start))
    return dict(impl=impl, dtype=dtype_name, tokens=n_tokens, tok_s=statistics.median(speeds),
                floor_tok_s=statistics.median(floors),
                x_floor=statistics.median(speed / f for speed, f in zip(speeds, floors)),
                beyond_weights_mb=peak_mb() - base, mean_nll=-logprob_sum / n_tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stories", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="whole passes over the stories; the median is kept")
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--impls", nargs="+", default=["minillm", "minillm-packed", "student"])
    parser.add_argument("--checkpoint", type=Path, default=Path(tempfile.gettempdir()) / "minillm-bench-qwen2.5-0.5b")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.checkpoint, args.stories, args.repeats)))
        return

    folder = add_tokenizer(make_checkpoint(args.checkpoint))
    print(f"{args.stories} TinyStories pieces of ~{STORY_CHARS} characters; random Qwen2.5-0.5B-shaped weights; "
          f"torch threads {torch.get_num_threads()}")
    for dtype in args.dtypes:
        rows = {}
        for impl in args.impls:
            done = subprocess.run([sys.executable, __file__, "--worker", impl, dtype, "--checkpoint", str(folder),
                                   "--stories", str(args.stories), "--repeats", str(args.repeats)],
                              capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{impl} {dtype} failed:\n{done.stderr[-3000:]}")
            rows[impl] = json.loads(done.stdout.strip().splitlines()[-1])
        mean_len = next(iter(rows.values()))["tokens"] / args.stories
        student = rows.get("student")
        print(f"\n{dtype}: {mean_len:.0f} scored tokens per story; forward floor (bare F.linear at that length, "
              "timed beside each implementation's passes): " +
              ", ".join(f"{r['floor_tok_s']:.0f}" for r in rows.values()) + " tok/s")
        print(f"{'':16} {'tok/s':>8} {'x floor':>8} {'x student':>9} {'MB beyond weights':>18} {'mean NLL':>9}")
        for impl, r in rows.items():
            vs = f"{r['tok_s'] / student['tok_s']:.2f}" if student else "-"
            print(f"{impl:16} {r['tok_s']:8.1f} {r['x_floor']:8.2f} {vs:>9} {r['beyond_weights_mb']:18.0f} "
                  f"{r['mean_nll']:9.4f}")


if __name__ == "__main__":
    main()
