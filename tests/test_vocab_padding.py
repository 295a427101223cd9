"""The tokenizer against the model's embedding rows: padding rows past the last token are allowed (as the
real models have them), a tokenizer with more tokens or far fewer is another model's and is refused
naming both files, and generation never picks a padding row (issue 15)."""

from __future__ import annotations

import shutil

import pytest
from checkpoints import make_checkpoint, make_tokenizer

import minillm
from conftest import need_shared_data
from minillm.cli import main as cli_main


def test_tokenizer_with_more_tokens_than_embedding_rows_is_refused(tmp_path, capsys):
    folder = make_checkpoint(tmp_path / "ckpt", "qwen2")           # 101 embedding rows
    make_tokenizer(folder, 300)                                     # a real BPE tokenizer of 300 tokens
    assert cli_main(["logits", str(folder), "Once upon a time"]) == 1
    err = capsys.readouterr().err
    assert (f"the tokenizer has 300 tokens ({folder / 'tokenizer.json'}) but the model's embedding has only 101 rows "
            f"(vocab_size in {folder / 'config.json'})") in err
    fits = make_checkpoint(tmp_path / "fits", "qwen2", vocab=320)  # 20 padding rows to a multiple of 64: accepted
    make_tokenizer(fits, 300)
    assert cli_main(["logits", str(fits), "Once upon a time", "--top-k", "2"]) == 0


def test_a_tokenizer_far_smaller_than_the_embedding_is_another_models(tmp_path, capsys):
    """Before issue 15 a 320-token tokenizer beside a 1000-row model scored and generated with exit 0."""
    folder = make_checkpoint(tmp_path / "ckpt", "qwen2", vocab=1000)
    make_tokenizer(folder, 320)
    for command in (["logits", str(folder), "Once upon a time"], ["generate", str(folder), "Once upon a time"]):
        assert cli_main(command) == 1
        err = capsys.readouterr().err
        assert (f"the tokenizer has 320 tokens ({folder / 'tokenizer.json'}) but the model's embedding has 1,000 rows "
                f"(vocab_size in {folder / 'config.json'}): 680 rows that no token uses") in err
        assert "Put the tokenizer files that came with these weights next to config.json" in err


def test_the_padding_rule_on_real_tokenizers(gpt2_tokenizer_folder, tmp_path):
    """The real tokenizers against the row counts of real models (public config.json values):
    each family's own pair passes; a tokenizer put beside another family's model does not."""
    import gzip

    from minillm.checkpoint.loading import check_tokenizer_fits

    source = need_shared_data() / "qwen2.5-tokenizer"
    qwen_folder = tmp_path / "qwen"
    qwen_folder.mkdir()
    (qwen_folder / "tokenizer.json").write_bytes(gzip.decompress((source / "tokenizer.json.gz").read_bytes()))
    shutil.copy(source / "tokenizer_config.json", qwen_folder)
    qwen, gpt2 = minillm.load_tokenizer(qwen_folder), minillm.load_tokenizer(gpt2_tokenizer_folder)
    stories = minillm.load_tokenizer(need_shared_data() / "stories260K")
    assert (qwen.vocab_size, gpt2.vocab_size, stories.vocab_size) == (151_665, 50_257, 512)
    check_tokenizer_fits(qwen, 151_936, "Qwen2.5-0.5B")      # 271 padding rows, a multiple of 128
    check_tokenizer_fits(qwen, 152_064, "Qwen2.5-7B")        # 399
    check_tokenizer_fits(gpt2, 50_257, "gpt2")               # none
    check_tokenizer_fits(gpt2, 50_304, "nanoGPT")            # 47, to a multiple of 64
    check_tokenizer_fits(stories, 512, "stories260K")
    with pytest.raises(ValueError, match=r"the tokenizer has 50,257 tokens .* has 151,936 rows .*: 101,679 rows "
                                         r"that no token uses"):
        check_tokenizer_fits(gpt2, 151_936, "Qwen2.5-0.5B")
    with pytest.raises(ValueError, match="has only 50,257 rows"):
        check_tokenizer_fits(qwen, 50_257, "gpt2")
    with pytest.raises(ValueError, match="512 tokens .* 50,257 rows"):
        check_tokenizer_fits(stories, 50_257, "gpt2")


def test_generate_never_emits_a_padding_row(tmp_path, capsys):
    """A model whose 20 padding rows (300..319) outscore every token: minillm generate continues with
    the tokens only (before issue 15 it picked a padding row and stopped with a decoding error). The
    reference is transformers' greedy decoding on the same weights cut to the tokenizer's 300 rows."""
    import torch
    from checkpoints import load_reference
    from transformers import AutoModelForCausalLM

    padded = make_checkpoint(tmp_path / "padded", "qwen2", vocab=320)
    make_tokenizer(padded, 300)
    reference = load_reference(padded)
    with torch.no_grad():
        reference.lm_head.weight[300:] *= 50                     # padding rows now win every argmax
    reference.save_pretrained(padded)
    cut = load_reference(padded)
    cut.resize_token_embeddings(300)                             # the same model with the padding rows removed
    cut.save_pretrained(tmp_path / "cut")
    cut = AutoModelForCausalLM.from_pretrained(tmp_path / "cut").eval()
    tok = minillm.load_tokenizer(padded)
    prompt = tok.encode("Once upon a time")
    with torch.no_grad():
        expected = cut.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False, eos_token_id=None,
                                pad_token_id=0)[0, len(prompt):].tolist()
    model = minillm.load_model(padded)
    unmasked = minillm.generate(model, prompt, 8, eos_token_id=())
    assert all(i >= 300 for i in unmasked)                       # the library alone picks padding rows, as transformers
    assert minillm.generate(model, prompt, 8, eos_token_id=(), tokenizer_size=300) == expected
    with pytest.raises(minillm.checkpoint.tokenizer.TokenizerError, match="padding rows"):   # and decoding one is an error
        tok.decode(unmasked)
    # the command knows the tokenizer: it prints the continuation (the tokenizer's ids stop nothing here)
    stop = [i for i in expected if i == tok.eos_token_id]
    assert cli_main(["generate", str(padded), "Once upon a time", "--max-new-tokens", "8", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.strip() == tok.decode(prompt + expected[: expected.index(stop[0]) + 1] if stop
                                                         else prompt + expected, skip_special_tokens=True).strip()
