"""GPT-2 (minillm.models.gpt2) against transformers' GPT2LMHeadModel on random checkpoints it saved.

Tolerances, as for Qwen2 (test_model_parity.py): float32 logits within 1e-5 absolute (both
sides run the same float32 operations; in practice the difference is 0). A padded row
against the row alone, or a KV-cache pass against the full pass: the products sum in another
order, so float32 rounding (1.2e-7 relative per operation, a few layers deep, logits up to
~40) moves logits by ~2e-5; those comparisons allow 5e-5, as does the packed path. bfloat16:
argmax equal at >= 99% of positions (two correct 16-bit implementations may round near-ties
differently). NumPy forward: 1e-4 (float32, another library's summation order).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import minillm
from checkpoints import VOCAB, load_reference, make_checkpoint, make_gpt2_checkpoint, pad_rows
from minillm.models.config import ConfigError
from minillm.models.numpy_model import NumpyModel
from minillm.checkpoint.weights import WeightsError

REPO = Path(__file__).resolve().parents[1]

CONFIGS = {
    # name: checkpoint options (n_embd / n_head = head width)
    "tied-2-layers": dict(n_embd=24, n_head=3, n_layer=2),                     # 8
    "odd-width-untied-1-layer": dict(n_embd=15, n_head=5, n_layer=1, tied=False),  # 3: odd everything
    "sharded-4-layers": dict(n_embd=20, n_head=4, n_layer=4, shard=True),        # 5
    "context-8-inner-40": dict(n_embd=16, n_head=2, n_layer=3, n_positions=8, n_inner=40),  # a tiny window
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def case(request, tmp_path_factory):
    """(folder, transformers model, n_positions) of one random GPT-2 checkpoint."""
    options = CONFIGS[request.param]
    folder = make_gpt2_checkpoint(tmp_path_factory.mktemp(request.param), seed=len(request.param), **options)
    return folder, load_reference(folder), options.get("n_positions", 64)


def _ids(batch: int, seq: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _logits(ref, ids, **kw) -> torch.Tensor:
    with torch.no_grad():
        return ref(ids, **kw).logits


def test_float32_logits_match_transformers(case):
    folder, ref, context = case
    model = minillm.load_model(folder)
    assert type(model).__name__ == "GPT2"
    for ids in (_ids(2, 1, 0), _ids(3, min(33, context), 1), _ids(1, context, 2)):   # the last fills the window
        expected = _logits(ref, ids)
        assert expected.abs().max() > 1, "random checkpoint too tame to catch mistakes"
        assert (model(ids) - expected).abs().max().item() <= 1e-5


def test_bfloat16_argmax_matches_transformers(case):
    folder, _, context = case
    model, ref = minillm.load_model(folder, dtype=torch.bfloat16), load_reference(folder, torch.bfloat16)
    ids = _ids(6, context, seed=3)
    got = model(ids)
    assert got.dtype == torch.bfloat16
    agreement = (got.argmax(-1) == _logits(ref, ids).argmax(-1)).float().mean().item()
    assert agreement >= 0.99


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_rows_equal_rows_run_alone(case, side):
    folder, _, context = case
    model = minillm.load_model(folder)
    lengths = [context, 3, context - 2, 1]
    rows = [_ids(1, n, seed=10 + n)[0] for n in lengths]
    ids, mask = pad_rows(rows, side, context)
    batched = model(ids, attention_mask=mask)
    assert torch.isfinite(batched).all(), "padding positions must not produce NaN"
    for i, row in enumerate(rows):
        assert (batched[i, mask[i].bool()] - model(row[None])[0]).abs().max().item() <= 5e-5


def test_left_padded_batch_matches_transformers_given_positions(case):
    folder, ref, context = case
    model = minillm.load_model(folder)
    ids = _ids(2, context, seed=4)
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)      # transformers' GPT-2 needs them given
    expected = _logits(ref, ids, attention_mask=mask, position_ids=positions)
    real = mask.bool()
    assert (model(ids, attention_mask=mask)[real] - expected[real]).abs().max().item() <= 1e-5


def test_kv_cache_logits_equal_full_forward(case):
    folder, _, context = case
    model = minillm.load_model(folder)
    ids = _ids(2, context, seed=5)
    cache = model.new_cache(batch=2, max_len=context)
    pieces = [model(ids[:, :3], cache=cache)]                                  # prompt
    pieces += [model(ids[:, i : i + 1], cache=cache) for i in range(3, 6)]     # one token at a time
    pieces.append(model(ids[:, 6:], cache=cache))                              # a chunk after a cache
    assert cache.length == context
    assert (torch.cat(pieces, dim=1) - model(ids)).abs().max().item() <= 5e-5


def test_greedy_generation_matches_transformers_and_the_uncached_loop(case):
    folder, ref, context = case
    model = minillm.load_model(folder)
    prompt = _ids(1, 3, seed=6)
    new = context - 3
    with torch.no_grad():
        expected = ref.generate(prompt, max_new_tokens=new, do_sample=False, eos_token_id=None,
                                pad_token_id=0)[0, 3:].tolist()
    got = minillm.generate(model, prompt[0].tolist(), max_new_tokens=new)
    assert got == expected
    ids = prompt[0].tolist()                       # without a cache: the whole sequence every step
    for _ in range(new):
        ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert ids[3:] == got


def test_packed_path_matches_transformers(case):
    from minillm.models.packed import PackedGELUMLP

    folder, ref, _ = case
    model = minillm.load_model(folder, packed=True)
    assert all(isinstance(block.mlp, PackedGELUMLP) for block in model.layers)
    ids = _ids(3, 7, seed=7)
    assert (model(ids) - _logits(ref, ids)).abs().max().item() <= 5e-5
    # bfloat16: where the argmax differs from transformers', the two tokens are a near-tie, within
    # one bfloat16 step (2^-7 of the largest logit) of each other in the float32 logits.
    model16, ref16 = minillm.load_model(folder, torch.bfloat16, packed=True), load_reference(folder, torch.bfloat16)
    ids = _ids(6, 8, seed=7)
    got, expected, exact = model16(ids).argmax(-1), _logits(ref16, ids).argmax(-1), _logits(ref, ids)
    gaps = (exact.gather(-1, expected[..., None]) - exact.gather(-1, got[..., None]))[..., 0]
    assert (gaps.abs() <= exact.abs().max() * 2**-7).all()


def test_parameter_count_matches_transformers(case):
    folder, ref, _ = case
    model = minillm.load_model(folder)
    assert model.num_parameters() == ref.num_parameters()
    # Non-embedding: without wte and wpe, as transformers (and Kaplan et al.) count it.
    assert model.num_parameters(non_embedding=True) == ref.num_parameters(exclude_embeddings=True)


def test_numpy_forward_matches_transformers(case):
    folder, ref, context = case
    ids = _ids(2, context, seed=8)
    expected = _logits(ref, ids).numpy()
    assert np.abs(NumpyModel(folder)(ids.numpy()) - expected).max() <= 1e-4


def test_inputs_past_n_positions_are_refused(case):
    folder, _, context = case
    model = minillm.load_model(folder)
    with pytest.raises(ValueError, match=f"n_positions={context}"):
        model(_ids(1, context + 1, seed=9))
    with pytest.raises(ValueError, match="context"):
        minillm.generate(model, [1, 2], max_new_tokens=context)
    with pytest.raises(ValueError, match="n_positions"):
        NumpyModel(folder)(np.zeros((1, context + 1), dtype=np.int64))


# ---- loading: the format's quirks, strictly ------------------------------------------------------

@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    folder = make_gpt2_checkpoint(tmp_path_factory.mktemp("gpt2"), seed=11, n_embd=24, n_head=3, n_layer=2)
    return folder, load_reference(folder)


def _rewrite(src: Path, dst: Path, change) -> Path:
    """A copy of the checkpoint in ``src`` with its tensors changed by ``change(dict) -> dict``."""
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    tensors = {name: t.contiguous() for name, t in change(load_file(src / "model.safetensors")).items()}
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_original_layout_without_prefix_and_with_mask_buffers_loads(tied, tmp_path):
    """OpenAI's upload: no ``transformer.`` prefix, and each layer's attn.bias (the causal mask)
    and attn.masked_bias, which are not weights."""
    folder, ref = tied
    n = json.loads((folder / "config.json").read_text())["n_positions"]

    def old_style(tensors):
        out = {name.removeprefix("transformer."): t for name, t in tensors.items()}
        for layer in range(2):
            out[f"h.{layer}.attn.bias"] = torch.tril(torch.ones(n, n, dtype=torch.uint8))[None, None]
            out[f"h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
        return out

    old = _rewrite(folder, tmp_path / "old", old_style)
    ids = _ids(2, 9, seed=12)
    assert (minillm.load_model(old)(ids) - _logits(ref, ids)).abs().max().item() <= 1e-5
    assert np.abs(NumpyModel(old)(ids.numpy()) - _logits(ref, ids).numpy()).max() <= 1e-4


@pytest.mark.parametrize("change, message", [
    (lambda t: {**t, "transformer.h.0.attn.extra": torch.zeros(3)}, "no place for"),       # still strict
    (lambda t: {k: v for k, v in t.items() if k != "transformer.h.1.mlp.c_fc.bias"}, "missing"),
    (lambda t: {**t, "h.0.ln_1.weight": t["transformer.h.0.ln_1.weight"].clone()}, "two names"),
    (lambda t: {**t, "transformer.h.0.attn.c_attn.weight": t["transformer.h.0.attn.c_attn.weight"].T},
     "transposed from Conv1D"),
])
def test_bad_gpt2_weights_are_refused_by_name(tied, tmp_path, change, message):
    bad = _rewrite(tied[0], tmp_path / "bad", change)
    with pytest.raises(WeightsError, match=message):
        minillm.load_model(bad)


@pytest.mark.parametrize("setting, message", [
    ({"activation_function": "relu"}, "activation_function 'relu'"),
    ({"activation_function": "gelu"}, "tanh approximation"),   # exact GELU: other logits
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"reorder_and_upcast_attn": True}, "reorder_and_upcast_attn"),
    ({"scale_attn_weights": False}, "scale_attn_weights"),
    ({"n_head": 5}, "not a multiple"),
])
def test_configs_gpt2_would_compute_differently_are_refused(tied, tmp_path, setting, message):
    folder = tmp_path / "cfg"
    folder.mkdir()
    raw = {**json.loads((tied[0] / "config.json").read_text()), **setting}
    (folder / "config.json").write_text(json.dumps(raw))
    (folder / "model.safetensors").symlink_to(tied[0] / "model.safetensors")
    with pytest.raises(ConfigError, match=message):
        minillm.load_model(folder)


def test_gpt2_accepts_gelu_pytorch_tanh_and_saves_a_folder_transformers_reads(tied, tmp_path):
    """gelu_pytorch_tanh is the same formula; save_weights writes Conv1D (in, out) again."""
    from minillm.checkpoint.weights import save_weights

    folder, ref = tied
    model = minillm.load_model(folder)
    out = tmp_path / "saved"
    save_weights(model, out)
    raw = {**model.config.to_dict(), "activation_function": "gelu_pytorch_tanh"}
    (out / "config.json").write_text(json.dumps(raw))
    ids = _ids(2, 9, seed=13)
    again = transformers.GPT2LMHeadModel.from_pretrained(out, attn_implementation="eager").eval()
    assert (_logits(again, ids) - _logits(ref, ids)).abs().max().item() <= 1e-5
    assert (minillm.load_model(out)(ids) - _logits(ref, ids)).abs().max().item() <= 1e-5


def test_llama_checkpoint_with_old_rotary_buffers_loads(tmp_path):
    """Llama conversions before transformers 4.31 saved each layer's rotary inv_freq; it is
    recomputed, so it is skipped. Anything else unknown is still refused."""
    folder = make_checkpoint(tmp_path / "llama", "llama", seed=14, heads=4, kv_heads=2)
    ref = load_reference(folder)
    head_dim = 8

    def with_inv_freq(tensors):
        inv_freq = 1.0 / 10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim)
        return {**tensors, **{f"model.layers.{i}.self_attn.rotary_emb.inv_freq": inv_freq.clone() for i in range(2)}}

    old = _rewrite(folder, tmp_path / "old", with_inv_freq)
    ids = _ids(2, 9, seed=15)
    assert (minillm.load_model(old)(ids) - _logits(ref, ids)).abs().max().item() <= 1e-5
    odd = _rewrite(folder, tmp_path / "odd",
                   lambda t: {**t, "model.layers.0.self_attn.rotary_emb.scale": torch.ones(1)})
    with pytest.raises(WeightsError, match="no place for"):
        minillm.load_model(odd)


# ---- the rest of the kit on a GPT-2 ----------------------------------------------------------------

def test_quantized_gpt2_matches_transformers_at_16_bits_and_drifts_at_2(tied):
    from minillm.inference.quantize import quantize_model

    folder, ref = tied
    model = minillm.load_model(folder)
    ids = _ids(2, 9, seed=16)
    expected = _logits(ref, ids)
    fine = (quantize_model(model, 16, "channel")(ids) - expected).abs().max().item()
    coarse = (quantize_model(model, 2, "channel")(ids) - expected).abs().max().item()
    assert fine < 1e-2 < coarse                # 16 bits: 1e-5 of each row's range; 2 bits: a quarter


def _solutions_logits():
    spec = importlib.util.spec_from_file_location("solutions_logits", REPO / "solutions" / "logits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_logits_lab_runs_on_gpt2_with_the_real_tokenizer(tmp_path, gpt2_tokenizer_folder):
    """solutions/logits.py on a GPT-2 with the real 50257-token vocabulary: its distributions
    are the probabilities minillm's scoring gives each next token, and its tables agree."""
    from minillm.inference.scoring import score

    folder = make_gpt2_checkpoint(tmp_path / "gpt2", seed=17, vocab=50257, n_embd=16, n_head=2, n_layer=2)
    model, tok = minillm.load_model(folder), minillm.load_tokenizer(gpt2_tokenizer_folder)
    lab = _solutions_logits()
    text = "This weekend I plan to"
    ids = tok.encode(text)
    probs = lab.next_token_distributions(model, tok, text)                  # (5, 50257)
    assert probs.shape == (5, 50257)
    scored = score(model, tok, text)
    got = torch.log(probs[torch.arange(4), torch.tensor(ids[1:])])          # p(token i+1 | tokens 0..i)
    assert torch.allclose(got, torch.tensor([row.logprob for row in scored.rows]), atol=1e-5)
    with torch.no_grad():
        last = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()(torch.tensor([ids])).logits[0, -1]
    assert (lab.next_token_logits(model, tok, text) - last).abs().max().item() <= 1e-5
    table = lab.predict_next_tokens(model, tok, text, 3)
    best = lab.most_likely_next_token(model, tok, text)
    assert table[0] == pytest.approx(best) and best[0] == tok.token_text(int(last.argmax()))


# ---- training a GPT-2 -------------------------------------------------------------------------------

def test_gpt2_trains_resumes_exactly_and_loads_in_transformers(tmp_path, one_thread):
    from minillm.data import bundled_texts
    from minillm.training.config import TrainConfig
    from minillm.training.train import resume, train

    texts = bundled_texts("stories")
    config = TrainConfig(architecture="gpt2", vocab_size=320, hidden_size=24, num_hidden_layers=2,
                         num_attention_heads=3, context=32, batch_size=8, steps=16, warmup_steps=4,
                         eval_every=8, eval_batches=2, learning_rate=1e-2)
    whole = train(texts, config, tmp_path / "whole", progress=False)
    train(texts, config, tmp_path / "split", until=9, progress=False)
    resumed = resume(tmp_path / "split", texts, progress=False)
    assert [r.train_loss for r in resumed.history] == [r.train_loss for r in whole.history]
    for (name, a), (_, b) in zip(whole.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(a, b), name
    assert whole.history[-1].val_loss < whole.history[0].val_loss - 0.5    # it learns (from ~ln 320 = 5.8)

    # The folder, and one fine-tuned from it on chat pairs (new token rows for the chat markers),
    # load in transformers' GPT2LMHeadModel with minillm's logits.
    from minillm.training.finetune import examples_from_pairs, finetune

    pairs = examples_from_pairs([("Tell a story.", texts[1][:200]), ("Another one.", texts[2][:200])] * 4)
    finetune(tmp_path / "whole", pairs, replace(config, steps=3, batch_size=2), tmp_path / "chat", progress=False)
    for folder in (tmp_path / "whole", tmp_path / "chat"):
        assert json.loads((folder / "config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]
        ref = transformers.GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager").eval()
        ids = torch.tensor([minillm.load_tokenizer(folder).encode(texts[0])[:32]])
        assert (minillm.load_model(folder)(ids) - _logits(ref, ids)).abs().max().item() <= 1e-5


def test_the_tinystories_paper_shape_has_its_3_6m_parameters():
    """n_embd 64, 6 layers, 8 heads, the GPT-2 vocabulary, context 128 (with transformers' default
    1024-row position table, as the paper's GPT2Config had: 3.58M; with 128 rows: 3.52M)."""
    from minillm.training.config import TrainConfig
    from minillm.training.new_model import build_model

    shape = dict(architecture="gpt2", hidden_size=64, num_hidden_layers=6, num_attention_heads=8, context=128)
    for positions in (0, 1024):
        model = build_model(TrainConfig(**shape, n_positions=positions), vocab_size=50257, eos_id=50256)
        ref = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=64, n_layer=6, n_head=8,
                                                                   n_positions=positions or 128))
        assert model.num_parameters() == ref.num_parameters()
    assert round(model.num_parameters() / 1e6, 1) == 3.6


def _grade_logits_on_gpt2(folder: Path, mistake: str | None):
    """The autograder's logits unit with --tiny-model gpt2 on the reference, with ``mistake`` appended."""
    import shutil

    from test_autograder import AUTOGRADER, FIXED_SEED, SOLUTIONS, run_grader

    target = folder / "submission"
    shutil.copytree(SOLUTIONS, target, ignore=shutil.ignore_patterns("__pycache__"))
    if mistake:
        module = target / "logits.py"
        module.write_text(module.read_text(encoding="utf-8") + "\n\n" +
                          (AUTOGRADER / "mistakes" / mistake).read_text(encoding="utf-8"), encoding="utf-8")
    return run_grader(target, folder / "results.json", "-m", "logits", "--tiny-model", "gpt2",
                      "--grader-seed", str(FIXED_SEED))


@pytest.fixture(scope="module")
def gpt2_logits_grades(request, tmp_path_factory):
    """The runs of test_the_logits_unit_grades_on_a_gpt2 that this session selected, started together when
    the first is needed, both at once (CI has 2 cores; each is one process on one torch thread, and this
    process only waits): ``{mistake: future of run_grader's answer}``."""
    from concurrent.futures import ThreadPoolExecutor

    wanted = [item.callspec.params["mistake"] for item in request.session.items
              if item.module is request.module and "gpt2_logits_grades" in item.fixturenames]
    with ThreadPoolExecutor(2) as pool:
        yield {m: pool.submit(_grade_logits_on_gpt2, tmp_path_factory.mktemp("gpt2-logits"), m) for m in dict.fromkeys(wanted)}


@pytest.mark.parametrize("mistake", [None, "logits__first_position.py"])
def test_the_logits_unit_grades_on_a_gpt2(gpt2_logits_grades, mistake):
    """The autograder's logits unit with --tiny-model gpt2: the reference earns every point, a
    known mistake does not."""
    _, results = gpt2_logits_grades[mistake].result()
    score = results["extra_data"]["units"]["logits"]
    assert (score["score"] == score["max_score"]) == (mistake is None), results["output"][-2000:]
