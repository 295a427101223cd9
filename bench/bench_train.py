"""Training throughput on CPU: minillm's training loop against the FLOP floor and transformers.

    python bench/bench_train.py                  # everything (~10 min on 2 cores, compile included)
    python bench/bench_train.py --threads 1 --impls minillm transformers --modes float32 bf16

The model: a Qwen2 of 5.41M parameters (vocab 4096, hidden 256, 6 layers, 8 query heads and
4 key/value heads of 32, SwiGLU 688, tied embeddings), trained on random token windows of
256 (+1) tokens, batch 8 (2,048 target tokens per step), with minillm.training.train's own step:
forward, cross-entropy, backward, gradient clipping, AdamW.

Implementations, each in a fresh process, all starting from the same initial weights:

* ``minillm``: minillm.models.qwen2.Transformer;
* ``minillm-compiled``: the same module through torch.compile (the first steps compile);
* ``transformers``: Qwen2ForCausalLM (default SDPA attention), ``forward = model(ids).logits``;
* ``transformers-eager``: the same with attn_implementation="eager".

Modes: ``float32``, and ``bf16``: bfloat16 autocast on CPU (weights and optimizer in float32).
Reported: training tokens per second (median of ``--repeats`` timed runs of ``--steps``
steps, after two warm-up steps, whose time is shown separately: for the compiled model it
is the compile time), the loss after the timed steps (all implementations see the same
batches, so float32 losses agree), and the ratio to the **floor**: 6 x N x tokens FLOPs
(N = the 5.40M matmul weights, LM head included; attention's own products, about 15% more,
are left out) at the matmul throughput this machine measures for the model's own matrix
shapes, forward and both backward products of every linear layer run bare with F.linear.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from common import timed

VOCAB, HIDDEN, LAYERS, HEADS, KV_HEADS, INTERMEDIATE = 4096, 256, 6, 8, 4, 688
CONTEXT, BATCH = 256, 8


def train_config(mode: str):
    from minillm.training.config import TrainConfig

    return TrainConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                       num_key_value_heads=KV_HEADS, intermediate_size=INTERMEDIATE, context=CONTEXT,
                       batch_size=BATCH, learning_rate=1e-3, bf16=mode == "bf16")


def build(impl: str, config):
    """(model, forward) for an implementation; every one starts from minillm's seeded init."""
    from minillm.checkpoint.weights import checkpoint_name
    from minillm.training.new_model import build_model

    ours = build_model(config, VOCAB, eos_id=0)
    if impl.startswith("minillm"):
        return ours, torch.compile(ours) if impl == "minillm-compiled" else ours
    import transformers

    hf_config = transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=CONTEXT,
        rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True, use_sliding_window=False)
    attention = "eager" if impl == "transformers-eager" else "sdpa"
    model = transformers.Qwen2ForCausalLM._from_config(hf_config, attn_implementation=attention)
    weights = {checkpoint_name(name): p.detach() for name, p in ours.named_parameters()}
    model.load_state_dict(weights, strict=False)   # the tied lm_head.weight follows the embedding
    model.train()
    return model, lambda ids: model(ids).logits


def worker(impl: str, mode: str, steps: int, repeats: int) -> dict:
    """Train in this (fresh) process; returns tokens/s (median), warm-up seconds and the last loss."""
    from minillm.training.step import make_optimizer, train_step

    config = train_config(mode)
    model, forward = build(impl, config)
    optimizer = make_optimizer(model, config)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(VOCAB, (BATCH, CONTEXT + 1), generator=generator) for _ in range(steps)]
    losses: list[float] = []

    def run() -> None:
        losses.extend(train_step(model, forward, optimizer, b, config.learning_rate, config) for b in batches)

    warmup = timed(lambda: [train_step(model, forward, optimizer, b, config.learning_rate, config)
                            for b in batches[:2]])
    seconds = statistics.median(timed(run) for _ in range(repeats))
    params = sum(p.numel() for p in model.parameters())
    return dict(impl=impl, mode=mode, tok_s=steps * BATCH * CONTEXT / seconds, warmup_s=warmup,
                loss=losses[-1], params=params)


def linear_shapes() -> list[tuple[int, int]]:
    """(out, in) of every matrix product in one forward pass, the LM head included."""
    kv = HIDDEN // HEADS * KV_HEADS
    layer = [(HIDDEN, HIDDEN), (kv, HIDDEN), (kv, HIDDEN), (HIDDEN, HIDDEN),
             (INTERMEDIATE, HIDDEN), (INTERMEDIATE, HIDDEN), (HIDDEN, INTERMEDIATE)]
    return layer * LAYERS + [(VOCAB, HIDDEN)]


def floor(dtype: torch.dtype, repeats: int) -> dict:
    """Matmul throughput at the model's shapes: for each weight, y = x W^T, dx = dy W, dW = dy^T x."""
    rows = BATCH * CONTEXT
    weights = [torch.randn(shape).to(dtype) for shape in linear_shapes()]
    xs = {w.shape[1]: torch.randn(rows, w.shape[1]).to(dtype) for w in weights}
    dys = {w.shape[0]: torch.randn(rows, w.shape[0]).to(dtype) for w in weights}

    def products() -> None:
        for w in weights:
            F.linear(xs[w.shape[1]], w)               # forward: 2 * rows * out * in FLOPs
            dys[w.shape[0]] @ w                       # gradient of the input
            dys[w.shape[0]].T @ xs[w.shape[1]]        # gradient of the weight

    n = sum(o * i for o, i in linear_shapes())
    with torch.inference_mode():
        products()
        seconds = statistics.median(timed(products) for _ in range(repeats))
    flops = 6 * n * rows
    return dict(matmul_params=n, gflop_s=flops / seconds / 1e9, tok_s=rows / seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impls", nargs="+", default=["minillm", "minillm-compiled", "transformers",
                                                        "transformers-eager"])
    parser.add_argument("--modes", nargs="+", default=["float32", "bf16"], choices=["float32", "bf16"])
    parser.add_argument("--steps", type=int, default=4, help="training steps per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(*args.worker, args.steps, args.repeats)))
        return

    threads = ["--threads", str(args.threads)] if args.threads else []
    print(f"Qwen2, vocab {VOCAB}, hidden {HIDDEN}, {LAYERS} layers, heads {HEADS}/{KV_HEADS}, SwiGLU {INTERMEDIATE}, "
          f"tied; batch {BATCH} x {CONTEXT} tokens; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"median of {args.repeats} runs of {args.steps} steps")
    for mode in args.modes:
        bare = floor(torch.bfloat16 if mode == "bf16" else torch.float32, args.repeats)
        rows = []
        for impl in args.impls:
            start = time.perf_counter()
            done = subprocess.run([sys.executable, __file__, "--worker", impl, mode, "--steps", str(args.steps),
                                   "--repeats", str(args.repeats), *threads], capture_output=True, text=True)
            if done.returncode:
                print(f"{impl} {mode}: failed after {time.perf_counter() - start:.0f} s: "
                      f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"\n{mode}: floor {bare['tok_s']:,.0f} tok/s = 6 x {bare['matmul_params'] / 1e6:.2f}M matmul params "
              f"at {bare['gflop_s']:.1f} GFLOP/s (bare F.linear, the model's shapes, "
              f"{'bfloat16' if mode == 'bf16' else 'float32'})")
        ref = next((r for r in rows if r["impl"] == "transformers"), None)
        print(f"{'':20} {'tok/s':>8} {'x floor':>8} {'vs transformers':>16} {'warm-up s':>10} {'loss':>8}")
        for r in rows:
            vs = f"{r['tok_s'] / ref['tok_s']:.2f}x" if ref else ""
            print(f"{r['impl']:20} {r['tok_s']:8,.0f} {r['tok_s'] / bare['tok_s']:8.2f} {vs:>16} "
                  f"{r['warmup_s']:10.1f} {r['loss']:8.4f}")


if __name__ == "__main__":
    main()
