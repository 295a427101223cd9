"""minillm.checkpoint.tokenizer against transformers (the reference) on real and freshly trained tokenizers."""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from tokenizers import Tokenizer as RawTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from minillm.checkpoint.hub import SourceError
from minillm.checkpoint.tokenizer import Tokenizer, TokenizerError, load_tokenizer

TEXTS = [
    "Hello world",
    "",
    " ",
    "   leading spaces",
    "trailing spaces   ",
    "multiple    inner     spaces",
    "line one\nline two\n\n\nafter blank lines\r\nwindows",
    "\ttabs\tand\t\tmore tabs\n\t",
    "3.14159 1234567890123456789 1,000,000 007",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
    "中文文本：你好，世界！",
    "مرحبا بالعالم",
    "Привет, мир! Ёжик.",
    "नमस्ते दुनिया",
    "def f(x):\n    return {'a': [x ** 2 for _ in range(3)]}  # comment\n",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more text",
    "<tool_call>{\"name\": \"f\"}</tool_call>",
    "It's, don't; I'm — \"quoted\" (parens) [brackets] {braces} ...!?",
    "<s>looks like a Llama token</s>",
]

STORIES = [
    "Once upon a time, there was a little girl named Lily.",
    "She loved to play outside in the park.",
    "One day, she saw a big, red ball. She wanted to play with it, but it was too high.",
    'Tom said, "Let\'s go to the park!" Mom smiled and said yes.',
    "The cat was sad.\nThe dog was happy.",
]

MESSAGES = {
    "user only": [{"role": "user", "content": "What is 2 + 2?"}],
    "system + user": [
        {"role": "system", "content": "You answer in French."},
        {"role": "user", "content": "Hello! ünïcödé 你好"},
    ],
    "multi-turn": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Tell me a joke."},
    ],
    "tool call": [
        {"role": "user", "content": "Weather in Zürich?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}
            ],
        },
        {"role": "tool", "content": '{"celsius": 3}'},
    ],
}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Météo d'une ville <aujourd'hui>",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


@pytest.fixture(scope="session")
def auto_tokenizer():
    return pytest.importorskip("transformers", reason="transformers is the reference").AutoTokenizer


def assert_parity(ours: Tokenizer, ref, texts: list[str]) -> None:
    """encode and decode (with and without special tokens) give what transformers gives."""
    for text in texts:
        ids = ours.encode(text)
        assert ids == ref(text)["input_ids"], text
        bare = ref(text, add_special_tokens=False)["input_ids"]
        assert ours.encode(text, add_special_tokens=False) == bare, text
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip), text


# --- Qwen2.5 -------------------------------------------------------------------------------


def _qwen_folder(shared_data: Path, folder: Path, **config_changes) -> Path:
    src = shared_data / "qwen2.5-tokenizer"
    with gzip.open(src / "tokenizer.json.gz", "rb") as fin, open(folder / "tokenizer.json", "wb") as fout:
        shutil.copyfileobj(fin, fout)
    config = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.update(config_changes)
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def qwen_folder(shared_data, tmp_path_factory) -> Path:
    return _qwen_folder(shared_data, tmp_path_factory.mktemp("qwen2.5-instruct"))


@pytest.fixture(scope="session")
def qwen(qwen_folder) -> Tokenizer:
    return load_tokenizer(qwen_folder)


@pytest.fixture(scope="session")
def qwen_ref(qwen_folder, auto_tokenizer):
    return auto_tokenizer.from_pretrained(qwen_folder)


def test_qwen_readme_facts(qwen, qwen_folder):
    assert qwen.encode("Hello world") == [9707, 1879]
    assert qwen.bos_token is None and qwen.bos_token_id is None  # Qwen adds no BOS
    assert (qwen.eos_token, qwen.eos_token_id) == ("<|im_end|>", 151645)
    assert (qwen.pad_token, qwen.pad_token_id) == ("<|endoftext|>", 151643)
    assert qwen.encode("<|endoftext|><|im_start|><|im_end|>") == [151643, 151644, 151645]
    assert qwen.vocab_size == 151_643 + 22
    assert qwen.folder == qwen_folder


def test_qwen_encode_decode_parity(qwen, qwen_ref):
    assert_parity(qwen, qwen_ref, TEXTS)


def test_qwen_vocabulary_parity(qwen, qwen_ref):
    assert qwen.vocab_size == len(qwen_ref)
    assert (qwen.bos_token_id, qwen.eos_token_id, qwen.pad_token_id) == (
        qwen_ref.bos_token_id, qwen_ref.eos_token_id, qwen_ref.pad_token_id,
    )
    ids = [0, 1, 13, 220, 271, 1879, 9707, 100000, 104307, 151642, 151643, 151657, 151664]
    for i in ids:
        assert qwen.id_to_token(i) == qwen_ref.convert_ids_to_tokens(i)
        assert qwen.token_text(i) == qwen_ref.decode([i])
    assert qwen.id_to_token(1879) == "Ġworld" and qwen.token_text(1879) == " world"


@pytest.mark.parametrize("name", MESSAGES)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("tools", [None, TOOLS], ids=["no-tools", "tools"])
def test_qwen_chat_template_parity(qwen, qwen_ref, name, add_generation_prompt, tools):
    messages = MESSAGES[name]
    ours = qwen.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tools=tools)
    ref = qwen_ref.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert ours == ref


def test_qwen_chat_template_content(qwen):
    prompt = qwen.apply_chat_template(MESSAGES["user only"], add_generation_prompt=True)
    assert prompt == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert qwen.encode(prompt, add_special_tokens=False)[:3] == [151644, 8948, 198]  # <|im_start|>system\n
    with_tools = qwen.apply_chat_template(MESSAGES["user only"], tools=TOOLS)
    # tojson as transformers defines it: no \u escapes for non-ASCII, no HTML escaping of < > '
    assert '"description": "Météo d\'une ville <aujourd\'hui>"' in with_tools


def test_qwen_base_model_eos(shared_data, tmp_path, auto_tokenizer):
    folder = _qwen_folder(shared_data, tmp_path, eos_token="<|endoftext|>")
    base, ref = load_tokenizer(folder), auto_tokenizer.from_pretrained(folder)
    assert (base.eos_token, base.eos_token_id) == ("<|endoftext|>", 151643)
    assert (ref.eos_token, ref.eos_token_id) == ("<|endoftext|>", 151643)
    assert base.encode("Hello world") == [9707, 1879]


# --- stories260K (Llama-style, BOS added by the post-processor) ----------------------------


@pytest.fixture(scope="session")
def stories(shared_data) -> Tokenizer:
    return load_tokenizer(shared_data / "stories260K")


def test_stories_parity(stories, shared_data, auto_tokenizer):
    ref = auto_tokenizer.from_pretrained(shared_data / "stories260K")
    text = (shared_data / "text" / "tinystories_validation_head.txt").read_text(encoding="utf-8")
    paragraphs = [p for p in text.split("\n\n") if p.strip()][:20]
    assert_parity(stories, ref, STORIES + paragraphs)
    assert (stories.bos_token_id, stories.eos_token_id, stories.vocab_size) == (1, 2, 512) == (
        ref.bos_token_id, ref.eos_token_id, len(ref),
    )
    ids = stories.encode(STORIES[0])
    assert ids[0] == 1 and ids.count(1) == 1  # the post-processor adds BOS; not added a second time
    assert stories.decode(ids, skip_special_tokens=True) == STORIES[0]


def test_stories_follows_tokenizer_json(stories, shared_data):
    # transformers 5 rebuilds Llama tokenizers (Metaspace, prefix only at the very start), which
    # differs from tokenizer.json for a leading space and for text right after a special token.
    # minillm runs tokenizer.json as written: here, exactly llama2.c's encoding.
    raw = RawTokenizer.from_file(str(shared_data / "stories260K" / "tokenizer.json"))
    for text in ["  two leading spaces", "<s>hi</s>", "x <s> y"]:
        assert stories.encode(text) == raw.encode(text).ids


@pytest.mark.parametrize("text", ["Once upon a time, Zephyrine said \"hi\".", "Tom  ran.\nThe end!"])
def test_token_texts_keep_their_leading_spaces(stories, qwen, text):
    # decode([id]) alone drops the SentencePiece space at the start of a text; token_text must
    # not, so that a table of tokens reads as the text. SentencePiece adds one space in front.
    assert "".join(stories.token_text(i) for i in stories.encode(text)[1:]) == " " + text
    assert "".join(qwen.token_text(i) for i in qwen.encode(text)) == text


def test_stories_has_no_chat_template(stories):
    with pytest.raises(TokenizerError, match="no chat template.*base"):
        stories.apply_chat_template(MESSAGES["user only"])


# --- a tokenizer trained here (no shared data needed) ---------------------------------------


def _train(folder: Path, config: dict, post_processor=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tok = RawTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|bos|>", "<|eos|>", "<|user|>", "<|bot|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = ["Once upon a time there was a cat.", "The cat sat on the mat.", "Hello world! 123 héllo"]
    tok.train_from_iterator(corpus * 5, trainer)
    if post_processor is not None:
        tok.post_processor = post_processor
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


BASIC_CONFIG = {
    "bos_token": "<|bos|>",
    "eos_token": "<|eos|>",
    "pad_token": {"__type": "AddedToken", "content": "<|eos|>", "special": True},  # older saved form
}
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m.role not in ['user', 'assistant'] %}{{ raise_exception('only user and assistant') }}{% endif %}"
    "{{ '<|user|>' if m.role == 'user' else '<|bot|>' }}"
    "{% generation %}{{ m.content | trim }}{% endgeneration %}"
    "{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|bot|>{% endif %}"
)


@pytest.fixture(scope="session")
def trained_folder(tmp_path_factory) -> Path:
    folder = _train(tmp_path_factory.mktemp("trained"), BASIC_CONFIG)
    (folder / "chat_template.jinja").write_text(TEMPLATE, encoding="utf-8")  # transformers 5's layout
    return folder


def test_trained_parity(trained_folder, auto_tokenizer):
    ours, ref = load_tokenizer(trained_folder), auto_tokenizer.from_pretrained(trained_folder)
    assert_parity(ours, ref, TEXTS + STORIES)
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id) == (0, 1, 1) == (
        ref.bos_token_id, ref.eos_token_id, ref.pad_token_id,
    )
    assert ours.vocab_size == len(ref)
    for messages in ([{"role": "user", "content": " hi "}], MESSAGES["multi-turn"][1:]):
        for gen in (False, True):
            expected = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            assert ours.apply_chat_template(messages, add_generation_prompt=gen) == expected
    assert ours.apply_chat_template([{"role": "user", "content": "hi"}]) == "<|bos|><|user|>hi<|eos|>\n"


def test_add_bos_and_eos_from_config(tmp_path):
    # The config asks for BOS and EOS and the file's post-processor adds nothing: minillm adds them.
    config = {**BASIC_CONFIG, "add_bos_token": True, "add_eos_token": True}
    tok = load_tokenizer(_train(tmp_path / "plain", config))
    body = tok.encode("The cat", add_special_tokens=False)
    assert tok.encode("The cat") == [0, *body, 1]
    # The post-processor already adds them: they must not be added twice.
    template = processors.TemplateProcessing(
        single="<|bos|> $A <|eos|>", special_tokens=[("<|bos|>", 0), ("<|eos|>", 1)]
    )
    tok = load_tokenizer(_train(tmp_path / "templated", config, post_processor=template))
    assert tok.encode("The cat") == [0, *body, 1]
    assert tok.encode("") == [0, 1]


def test_template_in_config_and_named_templates(tmp_path):
    folder = _train(tmp_path, {**BASIC_CONFIG, "chat_template": [
        {"name": "default", "template": "D{{ messages | length }}"},
        {"name": "tool_use", "template": "T{{ tools | tojson }}"},
    ]})
    tok = load_tokenizer(folder)
    assert tok.apply_chat_template(MESSAGES["user only"]) == "D1"
    assert tok.apply_chat_template(MESSAGES["user only"], tools=[{"n": "é"}]) == 'T[{"n": "é"}]'


def test_special_tokens_map_json(tmp_path, auto_tokenizer):
    # Older checkpoints name their special tokens in special_tokens_map.json.
    folder = _train(tmp_path, {})
    special = {"bos_token": "<|bos|>", "eos_token": {"content": "<|eos|>", "lstrip": False, "rstrip": False}}
    (folder / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")
    ours, ref = load_tokenizer(folder), auto_tokenizer.from_pretrained(folder)
    assert (ours.bos_token_id, ours.eos_token_id) == (0, 1) == (ref.bos_token_id, ref.eos_token_id)


def test_template_globals(tmp_path):
    folder = _train(tmp_path, {**BASIC_CONFIG, "chat_template": (
        "{{ strftime_now('%Y') }}{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
        "[{{ m.content }}]{% endfor %}\n  {% if true %}\n{{ pad_token }}{% endif %}"
    )})
    text = load_tokenizer(folder).apply_chat_template(MESSAGES["multi-turn"])
    assert text == f"{datetime.now():%Y}[Be brief.]<|eos|>"  # loopcontrols; trim/lstrip_blocks


# --- errors ---------------------------------------------------------------------------------


def test_missing_tokenizer_json(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"sentencepiece")
    with pytest.raises(TokenizerError, match="has no tokenizer.json") as err:
        load_tokenizer(tmp_path)
    assert str(tmp_path) in str(err.value) and "SentencePiece" in str(err.value)


def test_unreadable_files(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match="tokenizer.json could not be read"):
        load_tokenizer(tmp_path)
    folder = _train(tmp_path / "ok", BASIC_CONFIG)
    (folder / "tokenizer_config.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(TokenizerError, match="tokenizer_config.json could not be read as JSON"):
        load_tokenizer(folder)


def test_special_token_not_in_vocabulary(tmp_path):
    with pytest.raises(TokenizerError, match="bos_token '<s>' is not in the vocabulary"):
        load_tokenizer(_train(tmp_path, {"bos_token": "<s>"}))


def test_bad_encode_decode_input(trained_folder):
    tok = load_tokenizer(trained_folder)
    assert issubclass(TokenizerError, ValueError)
    with pytest.raises(TokenizerError, match="takes a str"):
        tok.encode(["a", "b"])
    with pytest.raises(TokenizerError, match=r"out of range.*0\.\.%d" % (tok.vocab_size - 1)):
        tok.decode([5, tok.vocab_size])
    with pytest.raises(TokenizerError, match="out of range"):
        tok.decode([-1])
    with pytest.raises(TokenizerError, match="out of range"):
        tok.id_to_token(10**6)
    with pytest.raises(TokenizerError, match="flat list of ints"):
        tok.decode([[1, 2]])
    assert tok.decode(5) == tok.decode([5])
    torch = pytest.importorskip("torch")
    assert tok.decode(torch.tensor([270, 265])) == tok.decode([270, 265])


@pytest.mark.parametrize(
    "messages, match",
    [
        ("hello", "non-empty list"),
        ([], "non-empty list"),
        (["hello"], r"messages\[0\].*dict with a string 'role'"),
        ([{"content": "hi"}], r"messages\[0\].*'role'"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant"}], r"messages\[1\].*no 'content'"),
    ],
)
def test_malformed_messages(trained_folder, messages, match):
    with pytest.raises(TokenizerError, match=match):
        load_tokenizer(trained_folder).apply_chat_template(messages)


def test_template_errors(trained_folder, tmp_path):
    tok = load_tokenizer(trained_folder)
    with pytest.raises(TokenizerError, match="failed on these messages: only user and assistant"):
        tok.apply_chat_template([{"role": "system", "content": "x"}])
    with pytest.raises(TokenizerError, match="tools must be a list"):
        tok.apply_chat_template(MESSAGES["user only"], tools="get_weather")
    broken = _train(tmp_path, {"chat_template": "{% for m in messages %}{{ m.content }}"})
    with pytest.raises(TokenizerError, match="tokenizer_config.json is not valid Jinja"):
        load_tokenizer(broken).apply_chat_template(MESSAGES["user only"])


# --- hub ids through the Hugging Face cache --------------------------------------------------


def test_load_from_hub_cache(offline_cache, trained_folder):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_cache / "models--org--name"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(trained_folder, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    tok = load_tokenizer("org/name")
    assert tok.folder == snapshot.resolve()
    assert tok.encode("The cat") == load_tokenizer(trained_folder).encode("The cat")


def test_uncached_hub_id(offline_cache):
    with pytest.raises(SourceError, match="offline.*cache"):
        load_tokenizer("org/not-cached")


def test_token_bytes_spell_the_text_byte_for_byte(qwen, stories):
    """token_bytes: exact bytes even for tokens that hold part of a character (token_text gives U+FFFD)."""
    text = "🦜 says <|im_end|> héllo 日本"
    ids = qwen.encode(text)
    assert b"".join(qwen.token_bytes(i) for i in ids) == text.encode()
    assert any("\ufffd" in qwen.token_text(i) for i in ids)              # some token does split a character
    ids = stories.encode("🦜 bird", add_special_tokens=False)          # byte fallback: <0xF0> <0x9F> ...
    assert [stories.token_bytes(i) for i in ids[1:5]] == [bytes([b]) for b in "🦜".encode()]
