import json
from collections import Counter

import pandas as pd
import pytest

from services.config.schema import DataConfig
from services.data.dialogues import DataError, DialogueExample, PromptSampler, load_examples


def test_chatterbot_loads_labelled_examples():
    train, held_out = load_examples(DataConfig(), "train"), load_examples(DataConfig(), "eval")
    assert len(train) > 1000 and len(held_out) > 100
    assert 0.05 < len(held_out) / (len(train) + len(held_out)) < 0.15  # eval_fraction 0.1 of the dialogues
    labels = Counter(ex.label for ex in train)
    assert len(labels) == 21 and labels["tech support"] > 500 and labels["greetings"] > 10
    assert all(ex.reference and ex.context and len(ex.context) <= 5 for ex in train)
    # Greetings opens with ["Hello", "Hi"]; the first example of a conversation has its opening as context.
    assert DialogueExample(context=("Hello",), reference="Hi", label="greetings") in train + held_out


def test_chatterbot_split_is_disjoint_deterministic_and_seeded():
    train, held_out = load_examples(DataConfig(), "train"), load_examples(DataConfig(), "eval")
    assert {ex.context[0].casefold() for ex in train}.isdisjoint({ex.context[0].casefold() for ex in held_out})
    assert load_examples(DataConfig(), "eval") == held_out
    assert load_examples(DataConfig(seed=1), "eval") != held_out


def test_chatterbot_multi_turn_context_window():
    examples = load_examples(DataConfig(categories=["emotion"], context_turns=2, eval_fraction=0.0), "train")
    assert max(len(ex.context) for ex in examples) == 2
    assert {ex.label for ex in examples} == {"emotion"}


def test_chatterbot_categories_filter_and_cap():
    full = load_examples(DataConfig(categories=["AI", "food"]), "train")
    assert {ex.label for ex in full} == {"AI", "food"}
    capped = load_examples(DataConfig(categories=["AI", "food"], max_examples=20), "train")
    assert len(capped) == 20 and set(capped) <= set(full)
    # The split does not depend on the filter: filtered eval examples are eval examples of the whole corpus.
    assert set(load_examples(DataConfig(categories=["AI"]), "eval")) <= set(load_examples(DataConfig(), "eval"))


def test_chatterbot_rejects_unknown_category_and_no_eval():
    with pytest.raises(DataError, match=r"unknown chatterbot category 'histroy'; did you mean 'history'\?"):
        load_examples(DataConfig(categories=["histroy"]), "train")
    with pytest.raises(DataError, match="no eval split: set data.eval_fraction > 0 or data.eval_split"):
        load_examples(DataConfig(eval_fraction=0.0), "eval")


ROWS = [
    {"turns": ["Hi", "Hello, how are you?"], "answer": "Fine.", "topic": "greetings"},
    {"turns": "What is AI? <EOU> Artificial intelligence. <EOU> ", "answer": "Cool.", "topic": 3},
    {"turns": ["a", "b", "c", "d"], "answer": "e", "topic": "letters"},
]
COLUMNS = dict(context_column="turns", reference_column="answer", label_column="topic", context_turns=3)


def _write(tmp_path, rows, suffix):
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


EXPECTED = [
    DialogueExample(context=("Hi", "Hello, how are you?"), reference="Fine.", label="greetings"),
    DialogueExample(context=("What is AI?", "Artificial intelligence."), reference="Cool.", label="3"),
    DialogueExample(context=("b", "c", "d"), reference="e", label="letters"),
]


def test_jsonl_with_custom_columns_and_eou_strings(tmp_path):
    path = _write(tmp_path, ROWS, ".jsonl")
    assert load_examples(DataConfig(source=str(path), eval_fraction=0.0, **COLUMNS), "train") == EXPECTED


def test_parquet_with_list_contexts_and_named_eval_split(tmp_path):
    rows = [{**row, "turns": row["turns"] if isinstance(row["turns"], list) else ["What is AI?"]} for row in ROWS]
    path = _write(tmp_path, [{**row, "topic": str(row["topic"])} for row in rows], ".parquet")
    cfg = DataConfig(source=str(path), eval_fraction=0.0, **{**COLUMNS, "label_column": None})
    examples = load_examples(cfg, "train")
    assert [ex.context for ex in examples] == [EXPECTED[0].context, ("What is AI?",), EXPECTED[2].context]
    assert [ex.label for ex in examples] == [None, None, None]
    with pytest.raises(DataError, match=r"no split 'validation' \(available: train\)"):
        load_examples(cfg.model_copy(update={"eval_split": "validation"}), "eval")


def test_file_eval_fraction_carves_by_dialogue_opening(tmp_path):
    rows = [{"turns": [f"opening {i // 3}", f"turn {i}"], "answer": "x", "topic": "t"} for i in range(300)]
    path = _write(tmp_path, rows, ".jsonl")
    cfg = DataConfig(source=str(path), eval_fraction=0.3, **COLUMNS)
    train, held_out = load_examples(cfg, "train"), load_examples(cfg, "eval")
    assert len(train) + len(held_out) == 300 and 30 < len(held_out) < 150
    assert {ex.context[0] for ex in train}.isdisjoint({ex.context[0] for ex in held_out})


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"turns": []}, r"bad.jsonl line 2, column 'turns': empty context: fill it in, or set data.drop_empty=true"),
        ({"turns": " <EOU> "}, r"line 2, column 'turns': empty context"),
        ({"turns": ["ok", 5]}, r"line 2, column 'turns': turn 2 is int \(5\), expected a string"),
        ({"answer": None}, r"line 2, column 'answer': expected a reference string, got NoneType"),
        ({"answer": "  "}, r"line 2, column 'answer': empty reference: fill it in, or set data.drop_empty=true"),
        ({"topic": None}, r"line 2, column 'topic': expected a label"),
        ({"topic": ""}, r"line 2, column 'topic': empty label"),
    ],
)
def test_bad_rows_name_the_1_based_line_and_column(tmp_path, bad, message):
    good = {"turns": ["hello"], "answer": "hi", "topic": "t"}
    row = {**good, **bad}
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=message):
        load_examples(DataConfig(source=str(path), eval_fraction=0.0, **COLUMNS), "train")


def test_missing_column_lists_available_ones(tmp_path):
    path = _write(tmp_path, ROWS, ".jsonl")
    with pytest.raises(
        DataError,
        match=r"label column 'label' not found \(available: turns, answer, topic\); "
        r"set data.label_column=null to go without \(and without rewards that score labels: rewards.topic=null",
    ):
        load_examples(DataConfig(source=str(path), context_column="turns", reference_column="answer"), "train")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        load_examples(DataConfig(source=str(tmp_path / "nope.jsonl")), "train")


def _examples(n):
    return [DialogueExample(context=(f"c{i}",), reference=f"r{i}", label=None) for i in range(n)]


def test_sampler_epochs_are_permutations():
    sampler = PromptSampler(_examples(10), seed=3)
    first, second = sampler.next_batch(10), sampler.next_batch(10)
    assert sorted(first, key=str) == sorted(second, key=str) == sorted(_examples(10), key=str)
    assert first != second and sampler.epoch == 1
    assert PromptSampler(_examples(10), seed=3).next_batch(20) == first + second  # deterministic


def test_sampler_resume_is_exact_across_epoch_boundary():
    sampler = PromptSampler(_examples(7), seed=11)
    sampler.next_batch(5)
    state = json.loads(json.dumps(sampler.state_dict()))  # survives a JSON checkpoint
    expected = [sampler.next_batch(4) for _ in range(5)]  # crosses epochs 0 -> 1 -> 2 -> 3

    resumed = PromptSampler(_examples(7), seed=11)
    resumed.load_state_dict(state)
    assert [resumed.next_batch(4) for _ in range(5)] == expected
    assert resumed.state_dict() == sampler.state_dict() and resumed.epoch == 3


def test_sampler_refuses_state_of_other_data():
    state = PromptSampler(_examples(7), seed=0).state_dict()
    with pytest.raises(DataError, match="examples differ from the saved run"):
        PromptSampler(_examples(8), seed=0).load_state_dict(state)
    with pytest.raises(DataError, match="at least one example"):
        PromptSampler([], seed=0)


def test_unreachable_hub_dataset_is_a_data_error():
    with pytest.raises(DataError, match=r"cannot load dataset 'no-such-org/no-such-dataset'.*need network access"):
        load_examples(DataConfig(source="no-such-org/no-such-dataset"), "train")


# --- files as a new user writes them: numbering, empty files, separators, dropping -------------------------

GOOD = {"turns": ["hello"], "answer": "hi", "topic": "t"}


def _config(path, **kw):
    return DataConfig(source=str(path), eval_fraction=0.0, **{**COLUMNS, **kw})


def test_malformed_jsonl_names_the_file_and_editor_line(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + '{"turns": ["a"], "answer": "b"\n')  # a blank line, then a torn one
    with pytest.raises(DataError) as err:
        load_examples(_config(path), "train")
    assert str(err.value).startswith(f"{path} line 3: not valid JSON (Expecting ',' delimiter")
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(["not", "an", "object"]) + "\n")
    with pytest.raises(DataError, match=r"corpus.jsonl line 2: expected a JSON object"):
        load_examples(_config(path), "train")


@pytest.mark.parametrize(("name", "text", "what"), [("empty.jsonl", "", "is empty"), ("blank.jsonl", "\n\n", "has no rows"),
                                                    ("empty.csv", "", "is empty"), ("header.csv", "turns,answer,topic\n", "has no rows")])
def test_an_empty_file_is_named(tmp_path, name, text, what):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=rf"^{path} {what}: give a file with one example per row$"):
        load_examples(_config(path), "train")


def test_csv_rows_are_numbered_from_1_after_the_header(tmp_path):
    path = tmp_path / "corpus.csv"
    path.write_text('turns,answer,topic\n"Hi <EOU> there",Fine.,greetings\n"a, quoted\nline",,t\n')
    with pytest.raises(DataError, match=r"corpus.csv row 2, column 'answer': empty reference"):
        load_examples(_config(path), "train")
    path.write_text("turns,answer,topic\nHi,Fine.,greetings,extra\n")
    with pytest.raises(DataError, match=r"corpus.csv row 1: 4 fields, the header has 3"):
        load_examples(_config(path), "train")
    path.write_text("turns,answer,topic\nHi <EOU> there,Fine.,greetings\n")
    assert load_examples(_config(path), "train") == [DialogueExample(("Hi", "there"), "Fine.", "greetings")]


def test_json_array_rows_and_a_missing_key(tmp_path):
    path = tmp_path / "corpus.json"
    path.write_text(json.dumps([GOOD, {"turns": ["x"], "topic": "t"}]))
    with pytest.raises(DataError, match=r"corpus.json row 2, column 'answer': expected a reference string, got nothing \(no such key\)"):
        load_examples(_config(path), "train")


def test_drop_empty_drops_and_counts(tmp_path, caplog):
    path = tmp_path / "corpus.jsonl"
    rows = [GOOD, {**GOOD, "answer": ""}, {**GOOD, "turns": [" "]}, {**GOOD, "answer": "yes"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level("WARNING", logger="services.data.dialogues"):
        examples = load_examples(_config(path, drop_empty=True), "train")
    assert [ex.reference for ex in examples] == ["hi", "yes"]
    assert "dropped 2 of 4 rows" in caplog.text and "data.drop_empty=true" in caplog.text


@pytest.mark.parametrize(("separator", "text"), [("__eou__", "Hi there __eou__ Hello __eou__ "), ("newline", "Hi there\nHello\n"),
                                                 ("\\n", "Hi there\nHello"), ("<EOU>", "Hi there <EOU> Hello")])
def test_turn_separator_presets(tmp_path, separator, text):
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({**GOOD, "turns": text}) + "\n")
    assert load_examples(_config(path, turn_separator=separator), "train")[0].context == ("Hi there", "Hello")


def test_a_corpus_joined_with_another_marker_is_pointed_out(tmp_path, caplog):
    path = tmp_path / "daily.jsonl"
    path.write_text(json.dumps({**GOOD, "turns": "Hi __eou__ Hello __eou__"}) + "\n")
    with caplog.at_level("WARNING", logger="services.data.dialogues"):
        assert load_examples(_config(path), "train")[0].context == ("Hi __eou__ Hello __eou__",)
    assert "set data.turn_separator=__eou__" in caplog.text


def test_too_few_rows_for_an_eval_split_says_how_many(tmp_path):
    path = tmp_path / "tiny.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")
    messages = []
    for split in ("train", "eval"):  # one row: one of the two splits is empty, whichever the hash picks
        try:
            load_examples(DataConfig(source=str(path), eval_fraction=0.5, **COLUMNS), split)
        except DataError as err:
            messages.append(str(err))
    assert len(messages) == 1
    assert "too few rows for a train and an eval split: its 1 examples (1 distinct dialogue openings)" in messages[0]

