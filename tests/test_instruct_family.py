"""The shipped instruct family data/models/tiny-{s,m,l}-instruct, the instructions it was tuned on, and
what an instruction is worth to it (instructions.csv, the table of data/models/README.md)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import minillm
from minillm.course.family import (
    HELD_OUT,
    SHAPES,
    held_out_real_stories,
    held_out_stories,
    real_split,
)
from minillm.course.instruct_family import (
    INSTRUCT_REAL_REPEATS,
    INSTRUCT_REPEATS,
    InstructionEffect,
    instruct_examples,
    instruction_source,
    instructions_table,
    story_instructions,
)
from minillm.data.stories import synthetic_stories, synthetic_stories_with_facts
from minillm.experiments.instructions import prompts_for, run_instructions
from minillm.experiments.scaling import paired_difference
from minillm.training.instructions import (
    derived_instruction,
    derived_pairs,
    instruction_pairs,
    story_names,
    story_words,
)

MODELS = Path(__file__).resolve().parents[1] / "data" / "models"
NAMES = ("tiny-s-instruct", "tiny-m-instruct", "tiny-l-instruct")


def test_instructions_are_written_from_each_storys_own_words():
    with_facts = synthetic_stories_with_facts(200, seed=1)
    assert [story for story, _ in with_facts] == synthetic_stories(200, seed=1)   # the same stories as before
    for (level, instruction, story), (_, facts) in zip(instruction_pairs(200, seed=1), with_facts):
        if level in ("named", "specific"):
            assert f"named {facts.hero.name}" in instruction and facts.hero.name in story
        if level == "topic":
            assert instruction.endswith(f" {facts.hero.kind}.") and f" {facts.hero.kind}" in story
        if level == "specific":
            assert facts.summary in instruction


def test_a_derived_instruction_names_the_storys_characters_and_its_own_words():
    story = ('Suddenly Bo found a shiny kite. "Look, Bo!" said Pip. The kite flew over the hill, and Sword '
             "the dog barked at the kite. Pip wanted the kite, but Bo shared it. They didn't fight. Kite!")
    # Names: capitalised words seen inside a sentence ("Suddenly Bo", "said Pip", "and Sword"); not
    # "Suddenly" (only at a sentence start), not "Look", "The", "They" (stop words), not "Kite" ("kite" is
    # written in lower case too).
    assert story_names(story) == ["Bo", "Pip", "Sword"]
    # Words: "kite" (4 times) first; then, of those used once, the longest, the first met first: "shiny" and
    # "fight" (5 letters; "barked", "shared", "wanted" are past tenses, "didn't" a contraction, "over" a stop
    # word), then "flew" (before "hill"); given in the order the story first uses them.
    assert story_words(story, 4) == ["shiny", "kite", "flew", "fight"]
    specific, paraphrased = derived_instruction(story), derived_instruction(story, "paraphrased")
    assert specific == derived_instruction(story)                          # deterministic
    words = story_words(story)
    assert specific == f"Write a story about Bo, Pip and Sword. Use the words {', '.join(words[:-1])} and {words[-1]}."
    assert paraphrased == (f"Here are some words: {', '.join(words[::-1][:-1])} and {words[0]}. "
                           "Tell a tale of Sword, Pip and Bo with them.")
    assert derived_instruction("The end.") == "Write a story."            # nothing to name


def test_a_real_paragraph_gets_its_names_and_words():
    paragraph = ("Once upon a time, there were two friends, Sally and Timmy. They were very jolly and often spent "
                 "their days on the playground.")
    assert paragraph in held_out_real_stories()
    assert story_names(paragraph) == ["Sally", "Timmy"]       # "Once" and "They" start sentences and are stop words
    assert story_words(paragraph, 4) == ["friends", "jolly", "often", "playground"]
    assert derived_instruction(paragraph).startswith("Write a story about Sally and Timmy. Use the words friends, ")


def test_held_out_stories_are_not_in_the_finetuning_data():
    train, val = instruct_examples()
    replies, val_replies = [e.reply for e in train], {e.reply for e in val}
    held_out = set(held_out_stories()) | set(held_out_real_stories())
    assert len(held_out) > 1200 and not held_out & (set(replies) | val_replies)
    assert not any(held in m["content"] for e in train for m in e.prompt for held in held_out_stories())
    assert not val_replies & set(replies)                        # validation is not a copy of training data
    bundled = minillm.data.bundled_texts("stories")
    assert all(replies.count(story) == INSTRUCT_REPEATS for story in bundled[:-HELD_OUT])
    trained = real_split()[0]
    counts = {p: replies.count(p) for p in trained[:300]}        # (a sample: count() over 10,000 replies each)
    assert all(n >= INSTRUCT_REAL_REPEATS for n in counts.values())   # more when a paragraph repeats in the file
    prompts = {e.prompt[0]["content"] for e in train}
    assert not any(p.startswith("Here are some words") for p in prompts)   # the paraphrase template only measures
    assert derived_pairs(trained[:50], seed=2) == derived_pairs(trained[:50], seed=2)


@pytest.mark.parametrize("name", NAMES)
def test_shipped_instruct_model_is_a_hub_style_instruct_model(name):
    folder = MODELS / name
    tok, ref_tok = minillm.load_tokenizer(folder), transformers.AutoTokenizer.from_pretrained(folder)
    messages = [{"role": "user", "content": story_instructions()[-1]}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == ref_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tok.encode(prompt + held_out_stories()[0], add_special_tokens=False)[:128]
    ref = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():   # float32, the same operations summed in another order: a few float32 ulps of
        # logits that reach |10| after fine-tuning (measured: 1.4e-5 absolute, 1.4e-6 relative at most)
        torch.testing.assert_close(minillm.load_model(folder)(torch.tensor([ids])), ref(torch.tensor([ids])).logits,
                                   atol=1e-5, rtol=1e-5)
    end = ref_tok.convert_tokens_to_ids("<|im_end|>")
    assert transformers.GenerationConfig.from_pretrained(folder).eos_token_id == [end, 0]
    assert tok.eos_token_id == end and not (folder / "trainer_state.safetensors").exists()


def _recorded() -> list[InstructionEffect]:
    with open(MODELS / "instructions.csv", encoding="utf-8") as f:
        return [InstructionEffect(r["texts"], r["model"], r["condition"], int(r["stories"]), float(r["perplexity"]),
                                  float(r["ratio"]), float(r["ratio_ci_low"]), float(r["ratio_ci_high"]),
                                  int(r["better"])) for r in csv.DictReader(f)]


def test_an_instruction_helps_the_instruct_models_and_its_own_helps_most():
    """What data/models/README.md concludes, on the held-out real paragraphs, read from instructions.csv
    and instructions_per_text.csv (the next tests check those against the shipped models): for every
    instruct model the story's own instruction lowers perplexity, its interval below 1, helps more than
    another story's (a paired interval below 1, story by story) and at least 3 points of ratio more; the
    paraphrase sits between. The issue's full bar (at least 5% as well) holds for tiny-m- and
    tiny-l-instruct; tiny-s-instruct stays short of the 5%. The base models read an instruction as plain
    text that hurts."""
    rows = {(r.texts, r.model, r.condition): r for r in _recorded()}
    real = [t for t in _per_text() if t["texts"] == "real"]
    tokens = np.array([float(t["tokens"]) for t in real])
    for name in SHAPES:
        tuned = {c: rows["real", f"{name}-instruct", c] for c in ("specific", "paraphrased", "mismatched")}
        assert tuned["specific"].ratio_ci_high < 1, tuned
        assert tuned["specific"].ratio < tuned["paraphrased"].ratio < tuned["mismatched"].ratio, tuned
        assert tuned["mismatched"].ratio - tuned["specific"].ratio >= 0.03, tuned
        own, other = (np.array([float(t[f"{name}-instruct/{c}"]) for t in real]) for c in ("specific", "mismatched"))
        assert paired_difference(other, tokens, own, tokens).ratio_ci_high < 1, name
        assert rows["real", name, "specific"].ratio_ci_low > 1, name           # a base model: worse after one
    assert rows["real", "tiny-m-instruct", "specific"].ratio <= 0.95
    assert rows["real", "tiny-l-instruct", "specific"].ratio <= 0.95
    # tiny-l-instruct no longer over-fits its tuning data: plain, it reads the held-out bundled stories
    # better than its base does (at 2,000 steps of 4e-3 it read them worse: 50.8 against 41.5)
    assert rows["bundled", "tiny-l-instruct", "none"].perplexity < rows["bundled", "tiny-l", "none"].perplexity


def _per_text() -> list[dict[str, str]]:
    with open(MODELS / "instructions_per_text.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_readme_table_is_instructions_csv_and_that_is_what_the_per_text_scores_give():
    """data/models/README.md quotes instructions.csv; each of its rows (pooled perplexity, paired ratio to
    none, its bootstrap interval, stories helped) is what instructions_per_text.csv gives, recomputed
    here; the next test checks the per-text scores against the shipped models."""
    recorded, per_text = _recorded(), _per_text()
    readme = (MODELS / "README.md").read_text(encoding="utf-8")
    for line in instructions_table(recorded):
        assert line in readme, line
    assert "minillm instructions --offline --texts data/tinystories/validation_head.txt --stories 1287" in readme
    assert {(r.texts, r.model) for r in recorded} == {(t, m) for t in ("real", "bundled")
                                                      for m in [*SHAPES, *NAMES]}
    for r in recorded:
        mine = [t for t in per_text if t["texts"] == r.texts]
        tokens = np.array([float(t["tokens"]) for t in mine])
        nll, none = (np.array([float(t[f"{r.model}/{c}"]) for t in mine]) for c in (r.condition, "none"))
        assert r.stories == len(mine) and r.perplexity == pytest.approx(math.exp(nll.sum() / tokens.sum()), rel=1e-6)
        if r.condition != "none":     # the NLLs are stored to 4 decimals, some 1e-7 of a story's 200 nats
            d = paired_difference(none, tokens, nll, tokens, seed=0)
            assert (d.ratio, d.ratio_ci_low, d.ratio_ci_high) == pytest.approx(
                (r.ratio, r.ratio_ci_low, r.ratio_ci_high), rel=1e-6) and d.b_better == r.better, r
    assert sum(r.texts == "real" for r in recorded) == 30 and recorded[0].stories == len(held_out_real_stories())


def test_the_per_text_scores_are_what_the_shipped_models_give():
    """Every 100th held-out real paragraph and every 5th held-out bundled story, all six models, all five
    instructions (with the prompts of the whole set: a mismatched one comes from half-way round it),
    scored again: instructions_per_text.csv holds what the shipped files give. (All 1,307 texts take
    minutes on 2 cores; a sample of every model catches a model retrained without its table.)"""
    models = [str(MODELS / n) for n in (*SHAPES, *NAMES)]
    stored = {(t["texts"], t["text_id"]): t for t in _per_text()}
    for texts, step in (("real", 100), ("bundled", 5)):
        source = instruction_source(models, texts)
        assert [i for t, i in stored if t == texts] == source.ids
        prompts, sample = prompts_for(source), list(range(0, len(source), step))
        results = run_instructions(models, source.select(sample), prompts=[prompts[i] for i in sample],
                                   progress=False)
        assert len(results.rows) == len(sample) * 5 * len(models)
        for r in results.rows:
            row = stored[texts, r.text_id]
            assert r.tokens == int(row["tokens"])    # float32 logits batched as in the first run; 4 decimals stored
            assert r.nll_total == pytest.approx(float(row[f"{Path(r.model).name}/{r.condition}"]), rel=1e-5, abs=1e-3)
