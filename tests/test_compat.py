"""minillm.compat against transformers itself: the course-style notebook run under both imports
prints the same numbers, and each piece (tokenizer call, decode, loss, generate, streamer,
config) answers as transformers' does on the same checkpoint and tokenizer files."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
import torch
import transformers
from checkpoints import make_checkpoint, make_gpt2_checkpoint, put_in_hub_cache
from test_notebooks import execute, outputs_of

from conftest import need_shared_data
from minillm import compat

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "logits_with_transformers_api.ipynb"
IMPORT = "AutoTokenizer, AutoModelForCausalLM, TextStreamer"
QWEN_ROWS = 151665     # the Qwen2.5 tokenizer's tokens: no padding rows, so every greedy id decodes
QWEN_EOS = 151643      # <|endoftext|>


def _with_tokenizer(folder: Path, tokenizer_folder: Path) -> Path:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tokenizer_folder / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory, gpt2_tokenizer_folder) -> Path:
    """A random GPT2LMHeadModel of GPT-2's vocabulary (50,257) saved by transformers, with the real GPT-2 tokenizer."""
    folder = make_gpt2_checkpoint(tmp_path_factory.mktemp("compat") / "gpt2", vocab=50257, n_positions=128)
    return _with_tokenizer(folder, gpt2_tokenizer_folder)


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory) -> Path:
    """A random Qwen2ForCausalLM with the real Qwen2.5(-Instruct) tokenizer; <|endoftext|> ends generation."""
    shared = need_shared_data() / "qwen2.5-tokenizer"
    tokenizer = tmp_path_factory.mktemp("qwen-tokenizer")
    (tokenizer / "tokenizer.json").write_bytes(gzip.decompress((shared / "tokenizer.json.gz").read_bytes()))
    shutil.copyfile(shared / "tokenizer_config.json", tokenizer / "tokenizer_config.json")
    folder = make_checkpoint(tmp_path_factory.mktemp("compat") / "qwen2", vocab=QWEN_ROWS)
    for name in ("config.json", "generation_config.json"):
        raw = json.loads((folder / name).read_text())
        raw.update(bos_token_id=QWEN_EOS, eos_token_id=QWEN_EOS)
        (folder / name).write_text(json.dumps(raw))
    return _with_tokenizer(folder, tokenizer)


@pytest.fixture(scope="module", params=["gpt2", "qwen2", "stories260K"])
def pair(request, gpt2_folder, qwen_folder):
    """(folder, minillm.compat tokenizer and model, transformers tokenizer and model) of one checkpoint:
    the random GPT-2 and Qwen2 ones, and a real pretrained Llama (BOS added, a SentencePiece-style decoder)."""
    folder = {"gpt2": gpt2_folder, "qwen2": qwen_folder}.get(request.param) or need_shared_data() / request.param
    ours = compat.AutoTokenizer.from_pretrained(folder), compat.AutoModelForCausalLM.from_pretrained(folder)
    theirs = (transformers.AutoTokenizer.from_pretrained(folder),
              transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval())
    return folder, ours, theirs


# --- the notebook, run under both imports -----------------------------------------------------

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")


def _run_notebook(folder: Path, library: str, tmp: Path, monkeypatch) -> str:
    """The notebook with its import cell switched to ``library``, run on ``folder``; all it printed."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    imports = [c for c in notebook.cells if c.cell_type == "code" and IMPORT in c.source]
    assert len(imports) == 1 and imports[0].source == f"from minillm.compat import {IMPORT}"
    imports[0].source = f"from {library} import {IMPORT}"
    path = tmp / f"{library}.ipynb"
    nbformat.write(notebook, path)
    ran, _, error = execute(path)
    assert error is None, f"{library}: {error}\n{outputs_of(ran)}"
    return "".join(o.get("text", "") for c in ran.cells for o in c.get("outputs", []) if o.get("name") == "stdout")


def _numbers(text: str) -> list[float]:
    return [float(n.replace(",", "")) for n in NUMBER.findall(text)]


def _decimals(number: str) -> int:
    return len(number.split(".")[1].split("e")[0]) if "." in number else 0


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_notebook_prints_the_same_numbers_under_both_imports(arch, gpt2_folder, qwen_folder, tmp_path, monkeypatch):
    folder = gpt2_folder if arch == "gpt2" else qwen_folder
    monkeypatch.setenv("MINILLM_EXAMPLE_MODEL", str(folder))
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(_run_notebook, folder, lib, tmp_path, monkeypatch) for lib in ("minillm.compat", "transformers")]
        ours, theirs = (run.result() for run in runs)
    # Every word, token and table layout is the same; only the numbers may differ, and only by rounding.
    def words(text: str) -> str:
        return re.sub(r" +", " ", NUMBER.sub("#", text))   # column widths follow the numbers' widths
    assert words(ours) == words(theirs), f"minillm.compat:\n{ours}\n\ntransformers:\n{theirs}"
    assert "generated ids:" in ours and "perplexity" in ours
    for a, b in zip(NUMBER.findall(ours), NUMBER.findall(theirs)):
        x, y = float(a.replace(",", "")), float(b.replace(",", ""))
        # Two float32 forward passes that add in different orders: the largest relative difference measured
        # here is 8e-6 (perplexities of the 1-bit copies, ~1e33 on these random models, where exp() amplifies
        # the logits' rounding); 1e-4 relative leaves a margin of 10, plus one unit of the last printed digit
        # (the two may round to either side of it).
        assert abs(x - y) <= 1e-4 * max(abs(x), abs(y)) + 10.0 ** -min(_decimals(a), _decimals(b)), (a, b)
    assert len(_numbers(ours)) > 60


def test_import_does_not_bring_in_transformers():
    code = "import sys, minillm.compat; assert 'transformers' not in sys.modules, 'transformers was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO,
                   env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


# --- the tokenizer ----------------------------------------------------------------------------

def _plain(encoding) -> dict:
    return {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in encoding.items()}


def test_tokenizer_call_padding_and_truncation_match(pair):
    _, (tok, _), (ref, _) = pair
    texts = ["Hello world, this is a longer text.", "Hi", "<|endoftext|> special"]
    for t in (tok, ref):
        t.pad_token = t.eos_token if t.pad_token is None else t.pad_token
    for side in ("left", "right"):
        tok.padding_side = ref.padding_side = side
        for kwargs in (dict(), dict(return_tensors="pt", padding=True), dict(padding="max_length", max_length=12),
                       dict(truncation=True, max_length=3), dict(return_tensors="pt", padding=True, truncation=True,
                                                                  max_length=4)):
            assert _plain(tok(texts, **kwargs)) == _plain(ref(texts, **kwargs)), (side, kwargs)
            assert _plain(tok(texts[0], **kwargs)) == _plain(ref(texts[0], **kwargs)), (side, kwargs)
    assert tok.encode("Hi there", return_tensors="pt").tolist() == ref.encode("Hi there", return_tensors="pt").tolist()
    assert tok("Hi").input_ids == ref("Hi").input_ids                    # attribute access, like BatchEncoding
    with pytest.raises(ValueError, match="padding=True"):
        tok(texts, return_tensors="pt")


def test_tokenizer_decode_vocab_and_special_tokens_match(pair):
    _, (tok, _), (ref, _) = pair
    ids = ref("Hello world<|endoftext|> again")["input_ids"]
    for value in (ids, ids[0], torch.tensor(ids), torch.tensor(ids[1]), torch.tensor([ids, ids])):
        for skip in (False, True):
            assert tok.decode(value, skip_special_tokens=skip) == ref.decode(value, skip_special_tokens=skip)
    assert tok.batch_decode(torch.tensor([ids, ids])) == ref.batch_decode(torch.tensor([ids, ids]))
    assert tok.convert_ids_to_tokens(ids) == ref.convert_ids_to_tokens(ids)
    assert tok.convert_ids_to_tokens(ids[0]) == ref.convert_ids_to_tokens(ids[0])
    assert tok.tokenize("Hello world") == ref.tokenize("Hello world")
    absent = ["Hello", "<|endoftext|>", "no such token"]
    assert tok.convert_tokens_to_ids(absent) == ref.convert_tokens_to_ids(absent)
    assert (tok.vocab_size, len(tok), tok.get_vocab()) == (ref.vocab_size, len(ref), ref.get_vocab())
    for name in ("bos_token", "eos_token", "pad_token", "unk_token", "bos_token_id", "eos_token_id", "pad_token_id",
                 "unk_token_id", "padding_side", "model_max_length"):
        assert getattr(tok, name) == getattr(ref, name), name
    tok.pad_token = ref.pad_token = tok.eos_token
    assert tok.pad_token_id == ref.pad_token_id
    tok.pad_token_id = ref.pad_token_id = ids[0]
    assert tok.pad_token == ref.pad_token
    with pytest.raises(compat.NotInKit, match="not in the vocabulary"):
        tok.pad_token = "[PAD]"


def test_special_tokens_named_only_in_special_tokens_map_match(tmp_path, gpt2_tokenizer_folder):
    """Older checkpoints name their special tokens in special_tokens_map.json, not tokenizer_config.json:
    the kit reads both files (once), and compat takes them from it, as transformers does."""
    folder = tmp_path / "tok"
    shutil.copytree(gpt2_tokenizer_folder, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    for name in ("unk_token", "bos_token", "eos_token"):
        config.pop(name, None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "special_tokens_map.json").write_text(json.dumps({"unk_token": "<|endoftext|>",
                                                                "bos_token": "<|endoftext|>"}))
    tok, ref = compat.AutoTokenizer.from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(folder)
    for name in ("unk_token", "unk_token_id", "bos_token", "bos_token_id", "eos_token", "eos_token_id"):
        assert getattr(tok, name) == getattr(ref, name), name
    assert tok.unk_token == "<|endoftext|>"


def test_chat_template_matches(qwen_folder):
    tok, ref = compat.AutoTokenizer.from_pretrained(qwen_folder), transformers.AutoTokenizer.from_pretrained(qwen_folder)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    for kwargs in (dict(tokenize=False), dict(), dict(return_tensors="pt"), dict(return_dict=False),
                   dict(return_dict=False, return_tensors="pt")):
        ours, theirs = (t.apply_chat_template(messages, add_generation_prompt=True, **kwargs) for t in (tok, ref))
        ours, theirs = (_plain(x) if hasattr(x, "items") else x.tolist() if isinstance(x, torch.Tensor) else x
                        for x in (ours, theirs))
        assert ours == theirs, kwargs


# --- the model --------------------------------------------------------------------------------

def test_logits_are_the_kits_and_match_transformers(pair):
    _, (tok, model), (_, ref) = pair
    ids = torch.tensor([tok.encode("Once upon a time there was a cat")])
    with torch.no_grad():
        ours, theirs = model(ids).logits, ref(ids).logits
        assert torch.equal(ours, model.kit(ids))                          # the kit's own numbers, untouched
        # float32, two implementations: agree to ~1e-6 of the logits' size (~5 here); 1e-4 leaves room.
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
        assert torch.equal(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits, ours)
        assert torch.equal(model(**tok("Once upon a time there was a cat", return_tensors="pt")).logits, ours)
        assert torch.equal(model(ids, return_dict=False)[0], ours)


def test_loss_with_labels_matches_transformers(pair):
    _, (tok, model), (_, ref) = pair
    ids = torch.tensor([tok.encode("Once upon a time there was a cat")[:6], tok.encode("The dog ran to the park.")[:6]])
    labels = ids.clone()
    labels[0, :3] = -100                                                  # ignored, as in transformers
    with torch.no_grad():
        ours, theirs = model(ids, labels=labels), ref(ids, labels=labels)
    torch.testing.assert_close(ours.loss, theirs.loss, rtol=1e-5, atol=1e-5)
    assert ours[0] is ours.loss and ours["logits"] is ours.logits
    # And by hand: the mean surprise of every label that is not -100, each predicted from the position before.
    logp = torch.log_softmax(ours.logits[:, :-1].double(), dim=-1)
    picked = logp.gather(-1, ids[:, 1:, None])[..., 0]
    keep = labels[:, 1:] != -100
    torch.testing.assert_close(ours.loss.double(), -picked[keep].mean(), rtol=1e-5, atol=1e-6)


def test_model_interface_matches(pair):
    _, (_, model), (_, ref) = pair
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings",
                 "model_type", "bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(model.config, name) == getattr(ref.config, name), name
    assert model.num_parameters() == ref.num_parameters()
    assert model.num_parameters(exclude_embeddings=True) == ref.num_parameters(exclude_embeddings=True)
    assert (model.device, model.dtype, model.training) == (ref.device, ref.dtype, ref.training)
    assert model.generation_config.eos_token_id == ref.generation_config.eos_token_id
    names = dict(model.named_parameters())
    assert sum(p.numel() for p in names.values()) == model.num_parameters()
    assert all(p.requires_grad for p in names.values())                  # trainable, as transformers loads them
    assert model.state_dict().keys() >= names.keys()


def test_greedy_generate_matches_transformers(pair):
    _, (tok, model), (_, ref) = pair
    prompt = tok("Once upon a time", return_tensors="pt")
    ours = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert torch.equal(ours, ref.generate(**prompt, max_new_tokens=12, do_sample=False))
    assert ours.shape == (1, prompt.input_ids.shape[1] + 12)
    # A token of the greedy path as an end id: generation stops right after it.
    stop = int(ours[0, prompt.input_ids.shape[1] + 3])
    short = model.generate(prompt.input_ids, max_new_tokens=12, eos_token_id=stop)
    assert torch.equal(short, ref.generate(prompt.input_ids, max_new_tokens=12, eos_token_id=stop))
    # transformers 5's default: 20 new tokens.
    assert torch.equal(model.generate(prompt.input_ids), ref.generate(prompt.input_ids))


def test_batched_generate_with_left_padding_matches_transformers(pair):
    _, (tok, model), (ref_tok, ref) = pair
    for t in (tok, ref_tok):
        t.pad_token, t.padding_side = t.eos_token, "left"
    texts = ["Once upon a time there was a", "The cat"]
    batch = tok(texts, return_tensors="pt", padding=True)
    assert _plain(batch) == _plain(ref_tok(texts, return_tensors="pt", padding=True))
    alone = model.generate(tok(texts[1], return_tensors="pt").input_ids, max_new_tokens=6)
    stop = int(alone[0, -3])                                              # row 2 ends early, row 1 need not
    kwargs = dict(max_new_tokens=6, pad_token_id=tok.pad_token_id, eos_token_id=stop)
    ours = model.generate(**batch, **kwargs)
    assert torch.equal(ours, ref.generate(**batch, **kwargs))
    torch.manual_seed(0)
    sampled = model.generate(**batch, max_new_tokens=3, do_sample=True, num_return_sequences=2)
    assert sampled.shape == (4, batch.input_ids.shape[1] + 3) and torch.equal(sampled[1::2, :-3], batch.input_ids)
    with pytest.raises(ValueError, match="do_sample=True"):
        model.generate(**batch, max_new_tokens=3, num_return_sequences=2)
    tok.padding_side = "right"
    with pytest.raises(ValueError, match="padding_side = 'left'"):
        model.generate(**tok(texts, return_tensors="pt", padding=True), max_new_tokens=2)


def test_streamer_prints_what_transformers_prints(pair):
    _, (tok, model), (ref_tok, ref) = pair
    prompt = tok("Once upon a time", return_tensors="pt").input_ids
    whole = None
    for kwargs in (dict(), dict(skip_prompt=True), dict(skip_prompt=True, skip_special_tokens=True)):
        printed = []
        for library, t, m in ((compat, tok, model), (transformers, ref_tok, ref)):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                m.generate(prompt, max_new_tokens=8, streamer=library.TextStreamer(t, **kwargs))
            printed.append(out.getvalue())
        assert printed[0] == printed[1] and printed[0].endswith("\n"), kwargs
        whole = whole or printed[0]
    # Our streamer with transformers' generate, and transformers' with ours: one protocol.
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ref.generate(prompt, max_new_tokens=8, streamer=compat.TextStreamer(tok))
        model.generate(prompt, max_new_tokens=8, streamer=transformers.TextStreamer(ref_tok))
    assert out.getvalue() == whole + whole


def test_loading_options_and_sampling_settings(gpt2_folder, tmp_path):
    assert compat.AutoModelForCausalLM.from_pretrained(gpt2_folder, torch_dtype=torch.bfloat16).dtype == torch.bfloat16
    assert compat.AutoModelForCausalLM.from_pretrained(gpt2_folder, device_map="auto").device.type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="not both"):
        compat.AutoModelForCausalLM.from_pretrained(gpt2_folder, dtype="float32", torch_dtype="float32")
    tok, model = compat.AutoTokenizer.from_pretrained(gpt2_folder), compat.AutoModelForCausalLM.from_pretrained(gpt2_folder)
    ref_tok = transformers.AutoTokenizer.from_pretrained(gpt2_folder)
    assert tok("a b", return_tensors="np")["input_ids"].tolist() == ref_tok("a b", return_tensors="np")["input_ids"].tolist()
    prompt = tok("Once upon a time", return_tensors="pt").input_ids
    greedy = model.generate(prompt, max_new_tokens=6)
    # Sampling from the top 1 token is the argmax: the sampling path gets top_k through.
    assert torch.equal(model.generate(prompt, max_new_tokens=6, do_sample=True, top_k=1), greedy)
    # The checkpoint's sampling defaults are generate's defaults; the call's arguments win.
    model.generation_config.do_sample, model.generation_config.top_k = True, 1
    assert torch.equal(model.generate(prompt, max_new_tokens=6), greedy)
    torch.manual_seed(0)
    first = model.generate(prompt, max_new_tokens=6, top_k=0, temperature=5.0)
    torch.manual_seed(0)
    assert torch.equal(model.generate(prompt, max_new_tokens=6, top_k=0, temperature=5.0), first)
    assert not torch.equal(first, greedy)                 # top_k=0 turns top-k off: at temperature 5, not the argmax
    # A repetition penalty the checkpoint asks for is not applied, and generate says so.
    model.generation_config.repetition_penalty = 1.1
    with pytest.warns(UserWarning, match="repetition_penalty=1.1"):
        model.generate(prompt, max_new_tokens=1)


def test_sampled_tokens_follow_transformers_filtered_distribution(gpt2_folder):
    """generate(do_sample=True, temperature=T, top_k=k): the next token's frequencies over many draws
    match softmax(top-k(logits / T)) computed from transformers' own logits, within 6 binomial standard
    errors per token (a correct sampler lands outside with probability ~2e-9 each)."""
    tok, model = compat.AutoTokenizer.from_pretrained(gpt2_folder), compat.AutoModelForCausalLM.from_pretrained(gpt2_folder)
    ref = transformers.AutoModelForCausalLM.from_pretrained(gpt2_folder).eval()
    prompt = tok("Once upon a time", return_tensors="pt").input_ids
    temperature, k, n = 3.0, 5, 1500
    with torch.no_grad():
        scaled = ref(prompt).logits[0, -1].double() / temperature
    top = scaled.topk(k)
    expected = torch.zeros_like(scaled)
    expected[top.indices] = torch.softmax(top.values, -1)
    torch.manual_seed(0)
    drawn = model.generate(prompt, max_new_tokens=1, do_sample=True, temperature=temperature, top_k=k,
                           num_return_sequences=n)[:, -1]
    freq = torch.bincount(drawn, minlength=scaled.numel()).double() / n
    tolerance = 6 * (expected * (1 - expected) / n).sqrt() + 1 / n
    assert set(drawn.tolist()) <= set(top.indices.tolist())
    assert ((freq - expected).abs() <= tolerance).all(), (freq[top.indices], expected[top.indices])


def test_hub_ids_go_through_the_kits_hub_code(gpt2_folder, offline_cache):
    put_in_hub_cache(offline_cache, "openai-community/gpt2", gpt2_folder)
    tok = compat.AutoTokenizer.from_pretrained("openai-community/gpt2")
    model = compat.AutoModelForCausalLM.from_pretrained("openai-community/gpt2", revision="main")
    local = compat.AutoModelForCausalLM.from_pretrained(gpt2_folder)
    ids = tok("This weekend I plan to", return_tensors="pt").input_ids
    assert ids.tolist() == [[1212, 5041, 314, 1410, 284]]          # the real GPT-2 tokenizer's ids
    assert torch.equal(model(ids).logits, local(ids).logits)
    with pytest.raises(ValueError, match="local folder"):
        compat.AutoModelForCausalLM.from_pretrained(gpt2_folder, revision="v1")


def test_what_the_kit_does_not_do_is_refused_with_the_kits_way(gpt2_folder):
    model = compat.AutoModelForCausalLM.from_pretrained(gpt2_folder)
    ids = torch.tensor([[1, 2, 3]])
    cases = [
        (lambda: model.generate(ids, num_beams=2), "num_beams=2.*beam search"),
        (lambda: model.generate(ids, repetition_penalty=1.2), "repetition_penalty"),
        (lambda: model(ids, output_attentions=True), "output_attentions.*minillm/models"),
        (lambda: model(ids, past_key_values=object()), "past_key_values.*new_cache"),
        (lambda: compat.AutoModelForCausalLM.from_pretrained(gpt2_folder, trust_remote_code=True), "never a checkpoint's code"),
        (lambda: compat.AutoModelForCausalLM.from_pretrained(gpt2_folder, load_in_4bit=True), "minillm.inference.quantize"),
        (lambda: model.generate(ids, frobnicate=3), "unknown argument frobnicate"),
    ]
    for call, message in cases:
        with pytest.raises(compat.NotInKit, match=message):
            call()
    with pytest.raises(AttributeError, match="minillm train"):
        model.save_pretrained("x")
    # Asking for nothing is not refused.
    model(ids, output_attentions=False, use_cache=False, past_key_values=None)
    model.generate(ids, num_beams=1, max_new_tokens=1, use_cache=True)
