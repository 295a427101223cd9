"""minillm's GPT-2 vs transformers' GPT2LMHeadModel on a random checkpoint of GPT-2 small's shape.

    python bench/bench_gpt2.py                  # ~3 min on 2 cores
    python bench/bench_gpt2.py --repeats 3      # quicker

GPT-2 small: n_embd 768, 12 layers, 12 heads, vocab 50257, 1024 positions, tied head (124M
parameters). In one process, for each dtype, the three models (minillm, minillm packed,
transformers with its default attention) are loaded from the same files and timed in turns,
so that this machine's drifting speed hits all of them alike: each repetition times every
model once, and the speed ratios are the medians of the per-repetition ratios.

* forward: one sequence of 256 tokens, full logits (``model(ids)`` / ``model(ids).logits``);
* decode: greedy decoding with the KV cache, ms per new token after a 16-token prompt,
  prefill excluded (the time for 1 + NEW tokens minus the time for 1 token, divided by NEW).

Goals (those of the Qwen2 benchmark): forward at least as fast as transformers, decode at
least 1.25x as fast as transformers' ``generate``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from common import timed

GPT2_SMALL = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
SEQ_LEN, PROMPT, NEW_TOKENS = 256, 16, 32


def make_checkpoint(folder: Path) -> Path:
    """A random float32 GPT-2 small, saved by transformers (once): weights ~ N(0, 0.02), LayerNorm gains 1."""
    if (folder / "model.safetensors").is_file():
        return folder
    import transformers

    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2_SMALL))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0) if ".ln_" in name and name.endswith("weight") else p.normal_(0, 0.02, generator=gen)
    model.save_pretrained(folder)
    return folder


def load_all(folder: Path, dtype: torch.dtype) -> dict:
    """{name: (forward(ids) -> logits, decode(n) -> ids)} for the three implementations."""
    import transformers

    import minillm

    torch.manual_seed(0)
    prompt = torch.randint(0, GPT2_SMALL["vocab_size"], (1, PROMPT))
    ref = transformers.GPT2LMHeadModel.from_pretrained(folder, dtype=dtype).eval()
    impls = {
        "transformers": (lambda ids: ref(ids).logits,
                         lambda n: ref.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                                eos_token_id=None, pad_token_id=0)),
    }
    for name, packed in (("minillm", False), ("minillm-packed", True)):
        model = minillm.load_model(folder, dtype=dtype, packed=packed)
        impls[name] = (model, lambda n, model=model: minillm.generate(model, prompt[0], max_new_tokens=n))
    return impls


def measure(impls: dict, repeats: int) -> dict:
    """Per implementation: lists of forward seconds and decode ms/token, one entry per repetition."""
    ids = torch.randint(0, GPT2_SMALL["vocab_size"], (1, SEQ_LEN), generator=torch.Generator().manual_seed(1))
    times = {name: {"forward": [], "decode": []} for name in impls}
    with torch.inference_mode():
        for forward, decode in impls.values():    # warm-up: page the weights in, settle the allocator
            forward(ids)
            decode(2)
        for _ in range(repeats):
            for name, (forward, decode) in impls.items():
                times[name]["forward"].append(timed(lambda: forward(ids)))
                one, full = timed(lambda: decode(1)), timed(lambda: decode(NEW_TOKENS + 1))
                times[name]["decode"].append((full - one) / NEW_TOKENS * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--checkpoint", type=Path, default=Path(tempfile.gettempdir()) / "minillm-bench-gpt2-small")
    args = parser.parse_args()

    folder = make_checkpoint(args.checkpoint)
    print(f"checkpoint: {folder} (random weights, GPT-2 small shapes); torch threads: {torch.get_num_threads()}; "
          f"forward: 1 x {SEQ_LEN} tokens; decode: {NEW_TOKENS} new tokens after {PROMPT}; {args.repeats} repetitions")
    for dtype_name in args.dtypes:
        times = measure(load_all(folder, getattr(torch, dtype_name)), args.repeats)
        ref = times["transformers"]
        print(f"\n{dtype_name}:\n{'':16} {'fwd tok/s':>10} {'decode ms':>10} {'fwd vs transformers':>20} "
              f"{'decode vs transformers':>23}")
        for name, t in times.items():
            fwd = statistics.median(ref_s / s for ref_s, s in zip(ref["forward"], t["forward"]))
            dec = statistics.median(ref_ms / ms for ref_ms, ms in zip(ref["decode"], t["decode"]))
            print(f"{name:16} {SEQ_LEN / statistics.median(t['forward']):10.0f} {statistics.median(t['decode']):10.2f} "
                  f"{fwd:19.2f}x {dec:22.2f}x")


if __name__ == "__main__":
    main()
