"""Generation stops where the checkpoint's generation_config.json says, in the API and the CLI,
and `minillm generate` takes its sampling defaults; transformers' generate() is the reference."""

from __future__ import annotations

import json

import pytest
import torch

import minillm
from minillm.cli import main
from minillm.models.config import ConfigError
from minillm.checkpoint.generation_config import GenerationConfig
from checkpoints import load_reference, make_checkpoint, make_tokenizer

PROMPT = "Once upon a time"
STEPS = 30


@pytest.fixture(scope="module")
def two_eos(tmp_path_factory):
    """A tiny model whose generation_config.json lists two end ids: the greedy continuation's
    tokens at two steps (the later one listed first), so generation must stop at the earlier."""
    folder = tmp_path_factory.mktemp("two-eos")
    make_checkpoint(folder, "qwen2", seed=4, vocab=320)
    make_tokenizer(folder, vocab_size=320)
    model, tok = minillm.load_model(folder), minillm.load_tokenizer(folder)
    prompt = tok.encode(PROMPT)
    free = minillm.generate(model, prompt, STEPS, eos_token_id=())           # never stops early
    fresh = [i for i, t in enumerate(free) if t not in free[:i] and t not in prompt]
    first, second = fresh[2], fresh[5]
    config = json.loads((folder / "config.json").read_text())
    config["eos_token_id"] = free[second]            # config.json names only one of them
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": [free[second], free[first]], "do_sample": False}))
    return folder, prompt, free, first, second


def test_the_api_stops_at_any_listed_id_like_transformers(two_eos):
    folder, prompt, free, first, second = two_eos
    with torch.no_grad():   # transformers reads generation_config.json itself
        expected = load_reference(folder).generate(torch.tensor([prompt]), max_new_tokens=STEPS,
                                                   pad_token_id=0)[0, len(prompt):].tolist()
    assert expected == free[: first + 1]
    for packed in (False, True):
        model = minillm.load_model(folder, packed=packed)
        assert model.generation_config.eos_token_ids == (free[second], free[first])
        assert minillm.generate(model, prompt, STEPS) == expected
    model = minillm.load_model(folder)
    assert minillm.generate(model, prompt, STEPS, eos_token_id=()) == free           # opting out
    assert minillm.generate(model, prompt, STEPS, eos_token_id=free[first + 1]) == free[: first + 2]


def test_the_cli_stops_there_too(two_eos, capsys):
    folder, prompt, free, first, _ = two_eos
    tok = minillm.load_tokenizer(folder)
    assert main(["generate", str(folder), PROMPT, "--max-new-tokens", str(STEPS)]) == 0
    out = capsys.readouterr().out
    assert out == tok.decode(prompt + free[: first + 1], skip_special_tokens=True) + "\n"


def test_the_cli_takes_the_sampling_defaults_the_user_leaves_out(two_eos, tmp_path, capsys):
    import shutil

    folder = shutil.copytree(two_eos[0], tmp_path / "sampling")
    settings = {"do_sample": True, "temperature": 1.5, "top_k": 12, "top_p": 0.9, "repetition_penalty": 1.05,
                "eos_token_id": []}
    (folder / "generation_config.json").write_text(json.dumps(settings))
    model, tok = minillm.load_model(folder), minillm.load_tokenizer(folder)
    prompt = tok.encode(PROMPT)
    for flags, (temperature, top_k) in [([], (1.5, 12)), (["--temperature", "0.5"], (0.5, 12))]:
        assert main(["generate", str(folder), PROMPT, "--max-new-tokens", "12", "--seed", "3", *flags]) == 0
        captured = capsys.readouterr()
        new = minillm.generate(model, prompt, 12, temperature=temperature, top_k=top_k, top_p=0.9, seed=3,
                               eos_token_id=(tok.eos_token_id,))
        assert captured.out == tok.decode(prompt + new, skip_special_tokens=True) + "\n"
        assert "from generation_config.json" in captured.err and "repetition_penalty 1.05" in captured.err
    # --temperature 0: greedy, whatever the file says.
    assert main(["generate", str(folder), PROMPT, "--max-new-tokens", "12", "--temperature", "0"]) == 0
    assert capsys.readouterr().out == tok.decode(prompt + minillm.generate(
        model, prompt, 12, eos_token_id=(tok.eos_token_id,)), skip_special_tokens=True) + "\n"


def test_reading_the_file(tmp_path):
    config = minillm.ModelConfig.from_dict(dict(
        model_type="llama", vocab_size=10, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
        num_attention_heads=2, eos_token_id=7))
    assert GenerationConfig.from_folder(tmp_path, config).eos_token_ids == (7,)     # no file: config.json's
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": 3, "do_sample": true, "top_p": 1.0}')
    read = GenerationConfig.from_folder(tmp_path, config)
    assert read.eos_token_ids == (3,) and read.sampling() == (1.0, 50, None)      # transformers' fallbacks
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": "</s>"}')
    with pytest.raises(ConfigError, match="generation_config.json: eos_token_id"):
        GenerationConfig.from_folder(tmp_path, config)


def test_chat_generation_stops_there_too(two_eos, tmp_path, capsys):
    """The issue's case: `minillm generate --chat` ran past an end id that only generation_config.json lists."""
    import shutil

    folder = shutil.copytree(two_eos[0], tmp_path / "chat")
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = ("{% for m in messages %}<|endoftext|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}assistant:{% endif %}")
    config_path.write_text(json.dumps(config))
    tok = minillm.load_tokenizer(folder)
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True),
                     add_special_tokens=False)
    # Two end ids from this prompt's own greedy continuation, as in the fixture.
    free = minillm.generate(minillm.load_model(folder), ids, STEPS, eos_token_id=())
    fresh = [i for i, t in enumerate(free) if t not in free[:i] and t not in ids]
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [free[fresh[4]], free[fresh[1]]]}))
    with torch.no_grad():
        expected = load_reference(folder).generate(torch.tensor([ids]), max_new_tokens=STEPS,
                                                   pad_token_id=0)[0, len(ids):].tolist()
    assert expected == free[: fresh[1] + 1]
    assert main(["generate", str(folder), "Hi", "--chat", "--max-new-tokens", str(STEPS)]) == 0
    # --chat keeps the special tokens, so the template's markers show where the reply starts.
    assert capsys.readouterr().out == tok.decode(ids + expected, skip_special_tokens=False) + "\n"
