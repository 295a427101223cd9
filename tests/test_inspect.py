"""minillm.inspect against transformers' own outputs: hidden states, attention probabilities, the
logit lens, the residual stream as a sum of what each block adds; the views and the two commands.
The models: tiny random Qwen2, Llama and GPT-2 checkpoints saved by transformers, and the kit's
trained tiny-s.

Tolerances: minillm and transformers run the same float32 operations in the same order (the
hidden states of these tiny models agree bit for bit when measured); BLAS may still split a
product differently for other shapes or thread counts, a few units in the last place. Hidden
states and logits are O(1..10), so 1e-5 absolute is ~100 units in the last place at 10 and far
below any real mistake (a wrong position, mask or norm moves them by 0.01..1); probabilities lie
in [0, 1], hence 1e-6.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest
import torch
from checkpoints import load_reference, make_checkpoint, make_gpt2_checkpoint, pad_rows

import minillm
import minillm.inspect
from minillm.cli import main
from minillm.inference.inspect import layer_labels

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "data" / "models" / "tiny-s"          # a trained Qwen2 the kit ships: 2 layers, 3 heads
HIDDEN_ATOL, PROB_ATOL = 1e-5, 1e-6
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

MODELS = {
    # GQA (4 query heads on 2 key/value heads), Qwen2's q/k/v biases, an untied LM head
    "qwen2": lambda folder: make_checkpoint(folder, "qwen2", heads=4, kv_heads=2, layers=3, tied=False),
    # Llama: no biases, one key/value head for all 4 query heads, a tied head
    "llama": lambda folder: make_checkpoint(folder, "llama", heads=4, kv_heads=1, layers=3, tied=True),
    "gpt2": lambda folder: make_gpt2_checkpoint(folder, n_layer=3),
    "trained": lambda folder: TINY,      # real trained weights: tiny-s, Qwen2, 3 query heads on 1 key/value head
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def pair(request, tmp_path_factory):
    """(minillm model, transformers model with eager attention) of one tiny random checkpoint."""
    folder = MODELS[request.param](tmp_path_factory.mktemp(request.param))
    return minillm.load_model(folder), load_reference(folder, attention="eager")


@pytest.fixture(scope="module")
def batch():
    """Two rows, 9 and 5 tokens, left-padded to 9, and the mask: 1 on real tokens."""
    gen = torch.Generator().manual_seed(7)
    return pad_rows([torch.randint(3, 100, (n,), generator=gen) for n in (9, 5)], "left", 9)


@pytest.fixture(scope="module")
def traced(pair, batch):
    """minillm's trace and transformers' outputs for the padded batch. transformers' GPT-2 numbers
    positions 0, 1, ... from the first column, padding or not, unless told: it gets the positions
    minillm uses (a row's first real token is 0), as its generate() would pass them."""
    model, ref = pair
    ids, mask = batch
    with torch.no_grad():
        expected = ref(ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                       output_hidden_states=True, output_attentions=True)
    return minillm.inspect.trace(model, ids, mask), expected


def test_hidden_states_equal_transformers_at_real_positions(traced, pair):
    run, expected = traced
    real = run.attention_mask.bool()                                      # (batch, seq)
    assert len(run.hidden_states) == len(expected.hidden_states) == len(pair[0].layers) + 1
    for mine, theirs in zip(run.hidden_states, expected.hidden_states):
        assert mine.shape == theirs.shape
        assert (mine[real] - theirs[real]).abs().max().item() <= HIDDEN_ATOL
    # the last entry is normed (transformers' convention), the residual stream's last one is not
    assert torch.equal(run.hidden_states[-1], run.final_hidden)
    assert (run.residual[-1] - run.final_hidden).abs().max().item() > 0.1


def test_attentions_equal_transformers_eager_on_real_query_rows(traced, pair):
    run, expected = traced
    real = run.attention_mask.bool()
    heads = pair[0].config.num_attention_heads
    assert len(run.attentions) == len(expected.attentions) == len(pair[0].layers)
    for mine, theirs in zip(run.attentions, expected.attentions):
        assert mine.shape == theirs.shape == (2, heads, 9, 9)
        rows = real[:, None, :, None].expand_as(mine)                     # real queries, every key
        assert (mine[rows] - theirs[rows]).abs().max().item() <= PROB_ATOL
        assert torch.equal(mine[1][:, 4:, :4], torch.zeros(heads, 5, 4))  # padding keys: weight exactly 0
        # padding query rows (row 1's first 4): weight 1 on themselves, as the model's causal_mask allows;
        # transformers 5.25 spreads them evenly over the 9 keys (both meaningless: nothing reads them)
        assert torch.equal(mine[1][:, :4, :], torch.eye(9)[:4].expand(heads, 4, 9))


def test_trace_logits_are_the_models_and_the_lens_ends_at_them(traced, pair, batch):
    run, expected = traced
    model, ref = pair
    real = run.attention_mask.bool()
    assert torch.equal(run.logits, model(*batch))
    layers = len(model.layers)
    assert torch.equal(run.logit_lens(layers), run.logits)       # the same norm and head on the same tensor
    lens = run.logit_lens()
    assert lens.shape == (layers + 1, 2, 9, run.logits.shape[-1])
    norm = ref.transformer.ln_f if hasattr(ref, "transformer") else ref.model.norm
    with torch.no_grad():
        for layer in range(layers):                              # transformers' pre-norm states, normed here
            theirs = ref.lm_head(norm(expected.hidden_states[layer]))
            assert (lens[layer][real] - theirs[real]).abs().max().item() <= HIDDEN_ATOL
    assert (lens[layers][real] - expected.logits[real]).abs().max().item() <= HIDDEN_ATOL
    with pytest.raises(ValueError, match=rf"layer must be an integer in 0\.\.{layers}"):
        run.logit_lens(layers + 1)
    heads = model.config.num_attention_heads
    assert repr(run) == f"Trace(batch=2, seq=9, layers={layers}, heads={heads}, vocab={run.logits.shape[-1]})"


def test_the_residual_stream_is_the_sum_of_what_each_block_adds(traced):
    run, _ = traced
    # The model computes x = x + attention(...), then x + mlp(...): adding the recorded outputs in
    # the same order repeats the same float32 additions, so the sums are equal bit for bit.
    total = run.residual[0]
    for layer, (attn, mlp) in enumerate(zip(run.attention_outputs, run.mlp_outputs)):
        total = total + attn + mlp
        assert torch.equal(total, run.residual[layer + 1])
    assert torch.equal(total, run.residual[-1])
    assert all(a.abs().max() > 0.01 and m.abs().max() > 0.01 for a, m in zip(run.attention_outputs, run.mlp_outputs))


def test_trace_leaves_the_model_as_it_was(pair, batch):
    model, _ = pair
    before = model(*batch)
    with pytest.raises(ValueError, match="outside this model's vocabulary"):
        minillm.inspect.trace(model, torch.tensor([[1, 10_000]]))     # fails inside the forward pass
    minillm.inspect.trace(model, *batch)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert not any("attend" in m.__dict__ for m in model.modules())   # the class's attention again
    assert torch.equal(model(*batch), before)
    with pytest.raises(TypeError, match="Qwen2/Llama Transformer or a GPT2"):
        minillm.inspect.trace(torch.nn.Linear(2, 2), torch.tensor([[1]]))


def test_packed_model_traces_with_exact_attention(tmp_path, batch):
    from minillm.models.packed import can_pack, grouped_attention

    if not can_pack(torch.float32):
        pytest.skip("this PyTorch build cannot pack weights (no oneDNN)")
    folder = MODELS["qwen2"](tmp_path / "q")
    readable, packed = minillm.load_model(folder), minillm.load_model(folder, packed=True)
    mine, theirs = minillm.inspect.trace(packed, *batch), minillm.inspect.trace(readable, *batch)
    real = batch[1].bool()
    for a, b in zip(mine.attentions, theirs.attentions):          # packed products: a different summation order
        assert (a - b)[real[:, None, :, None].expand_as(a)].abs().max().item() <= PROB_ATOL
    for a, b in zip(mine.hidden_states, theirs.hidden_states):
        assert (a[real] - b[real]).abs().max().item() <= HIDDEN_ATOL
    assert all(m.attend is grouped_attention for m in packed.modules() if hasattr(m, "attend"))


@pytest.fixture(scope="module")
def tiny():
    return minillm.load_model(TINY), minillm.load_tokenizer(TINY)


TEXT = "Once upon a time, there was a little girl named"


def test_logit_lens_table_rows_and_views(tiny):
    model, tok = tiny
    table = minillm.inspect.logit_lens(model, tok, TEXT, top_k=3)
    ids = tok.encode(TEXT)
    assert [label for label, _ in table.rows] == ["embeddings", "block 0", "block 1 (output)"] == layer_labels(2)
    assert table.position == len(ids) - 1 and table.token == tok.token_text(ids[-1])
    last = minillm.next_tokens(model, tok, TEXT, k=3)               # the model's own prediction, another path
    assert [i for _, i, _ in table.rows[-1][1]] == [i for _, i, _, _ in last.rows]
    assert [p for *_, p in table.rows[-1][1]] == pytest.approx([p for *_, p in last.rows], rel=1e-5)
    ref = load_reference(TINY)                                       # the middle row, from transformers:
    with torch.no_grad():                                            # block 0's output through its norm and head
        state = ref(torch.tensor([ids]), output_hidden_states=True).hidden_states[1]
        probs = torch.softmax(ref.lm_head(ref.model.norm(state))[0, -1].float(), -1)
    top = torch.topk(probs, 3)
    assert [i for _, i, _ in table.rows[1][1]] == top.indices.tolist()
    assert [p for *_, p in table.rows[1][1]] == pytest.approx(top.values.tolist(), rel=1e-4)
    text = str(table).splitlines()
    assert len(text) == 2 + 3 and text[-1].startswith("block 1 (output)")
    html = table._repr_html_()
    assert html.count("<tr>") == 1 + 3 and "rgba(40, 110, 200, 1.000)" in html   # the largest cell, full blue
    with pytest.raises(ValueError, match="position 99 is outside"):
        minillm.inspect.logit_lens(model, tok, TEXT, position=99)


def test_attention_figure_draws_the_traced_maps(tiny, batch):
    model, tok = tiny
    ids, mask = batch
    run = minillm.inspect.trace(model, ids, mask)
    labels = [tok.token_text(i) for i in ids[1].tolist()]
    grid = minillm.inspect.attention_figure(run, labels, layer=1, row=1)
    panels = [ax for ax in grid.axes if ax.images and ax.get_visible() and ax.get_label() != "<colorbar>"]
    assert len(panels) == 3                                            # tiny-s has 3 heads
    for head, ax in enumerate(panels):                                 # row 1's 5 real tokens only
        assert torch.equal(torch.as_tensor(ax.images[0].get_array().data), run.attentions[1][1, head, 4:, 4:])
    assert [t.get_text() for t in panels[0].get_yticklabels()] == [t.replace(" ", "\u2423") for t in labels[4:]]
    one = minillm.inspect.attention_figure(run, labels, layer=0, head=2, row=1)
    assert sum(1 for ax in one.axes if ax.images) == 1
    with pytest.raises(ValueError, match=r"head must be an integer in 0\.\.2"):
        minillm.inspect.attention_figure(run, labels, layer=0, head=3)


def test_attention_command_writes_a_png(tmp_path, capsys):
    grid, single = tmp_path / "grid.png", tmp_path / "one.png"
    assert main(["attention", str(TINY), TEXT, "--layer", "1", "--out", str(grid)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {grid}"
    assert main(["attention", str(TINY), TEXT, "--layer", "1", "--head", "2", "--out", str(single)]) == 0
    for path in (grid, single):
        assert path.read_bytes()[:8] == PNG_MAGIC
    wide, narrow = matplotlib.image.imread(grid), matplotlib.image.imread(single)   # decodes as an image
    assert wide.shape[1] > 1.5 * narrow.shape[1]                     # 2 x 2 panels against one
    assert main(["attention", str(TINY), "hi", "--layer", "2", "--out", str(tmp_path / "x.png")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("minillm attention: error: layer must be an integer in 0..1") and error.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_lens_command_prints_one_row_per_layer(tiny, capsys):
    assert main(["lens", str(TINY), TEXT, "--top-k", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("The logit lens after token") and lines[1].split() == ["layer", "#1", "#2", "#3", "#4"]
    assert [line.split("  ")[0] for line in lines[2:]] == layer_labels(2)
    model, tok = tiny
    best = minillm.next_tokens(model, tok, TEXT, k=1).rows[0][0]
    assert lines[-1].split("  ", 1)[1].lstrip().startswith(repr(best))
