"""Dataset loaders: every format, the content hash, error messages, and the shipped sets."""

from __future__ import annotations

import csv
import itertools
import json
import pickle

import pytest

from ssah_engine.data import (
    Dataset,
    DatasetError,
    Example,
    builtin_names,
    content_sha256,
    load_dataset,
)

PAIRS = [
    ("Explain photosynthesis in one sentence.", "Plants turn light, water and CO2 into sugar."),
    ('Say "hi" in French, with a comma, please', "Salut, ça va ?"),
    ("Line one\nline two", "Multi-line\nanswer"),
]


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", "utf-8")
    return path


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def expect_error(source, *, line, field, **kwargs):
    with pytest.raises(DatasetError) as info:
        load_dataset(str(source), **kwargs)
    err = info.value
    message = str(err)
    assert source.name in message
    if line is not None:
        assert f"line {line}" in message
        assert err.line == line
    if field is not None:
        assert f"'{field}'" in message
        assert err.field == field
    assert err.path == str(source)
    return err


# ---------------------------------------------------------------------------- formats


def test_jsonl_prompt_response(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS])
    ds = load_dataset(str(path))
    assert ds.name == str(path)
    assert len(ds) == 3
    assert ds.examples == tuple(Example(p, r) for p, r in PAIRS)


def test_jsonl_prompt_only_and_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a"}\n\n   \n{"prompt": "b", "response": null}\n', "utf-8")
    ds = load_dataset(str(path))
    assert ds.examples == (Example("a"), Example("b"))
    assert not ds.has_responses


def test_jsonl_alpaca_records(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"instruction": "Translate", "input": "Hello", "output": "Bonjour"},
            {"instruction": "Name a colour", "input": "", "output": "Blue"},
        ],
    )
    ds = load_dataset(str(path))
    assert ds.examples == (Example("Translate\n\nHello", "Bonjour"), Example("Name a colour", "Blue"))


def test_json_alpaca_list(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(
        json.dumps(
            [
                {"instruction": "Translate", "input": "Hello", "output": "Bonjour"},
                {"instruction": "Name a colour", "input": "", "output": "Blue"},
            ]
        ),
        "utf-8",
    )
    ds = load_dataset(str(path))
    assert ds.examples == (Example("Translate\n\nHello", "Bonjour"), Example("Name a colour", "Blue"))


def test_json_prompt_response_list(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"prompt": p, "response": r} for p, r in PAIRS], indent=2), "utf-8")
    assert load_dataset(str(path)).examples == tuple(Example(p, r) for p, r in PAIRS)


def test_txt_one_prompt_per_line(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("first prompt\n\n  second prompt  \r\nthird\n", "utf-8")
    ds = load_dataset(str(path))
    assert [e.prompt for e in ds.examples] == ["first prompt", "second prompt", "third"]
    assert all(e.response is None for e in ds.examples)


def test_csv_advbench(tmp_path):
    path = write_csv(tmp_path / "adv.csv", ["goal", "target"], [[p, r] for p, r in PAIRS])
    assert load_dataset(str(path)).examples == tuple(Example(p, r) for p, r in PAIRS)


def test_csv_harmbench_with_context(tmp_path):
    header = ["Behavior", "FunctionalCategory", "SemanticCategory", "Tags", "ContextString", "BehaviorID"]
    rows = [
        ["Summarise the text", "contextual", "misc", "", "Some context here", "b1"],
        ["Do the plain thing", "standard", "misc", "", "", "b2"],
    ]
    ds = load_dataset(str(write_csv(tmp_path / "hb.csv", header, rows)))
    assert ds.examples == (
        Example("Some context here\n\nSummarise the text"),
        Example("Do the plain thing"),
    )


def test_csv_bom_and_crlf(tmp_path):
    path = tmp_path / "adv.csv"
    path.write_bytes("\ufeffgoal,target\r\nq1,a1\r\nq2,a2\r\n".encode("utf-8"))
    assert load_dataset(str(path)).examples == (Example("q1", "a1"), Example("q2", "a2"))


def test_same_content_same_hash_across_formats(tmp_path):
    jsonl = write_jsonl(tmp_path / "d.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS])
    alpaca_jsonl = write_jsonl(tmp_path / "a.jsonl", [{"instruction": p, "output": r} for p, r in PAIRS])
    js = tmp_path / "d.json"
    js.write_text(json.dumps([{"instruction": p, "input": "", "output": r} for p, r in PAIRS]), "utf-8")
    adv = write_csv(tmp_path / "d.csv", ["goal", "target"], [[p, r] for p, r in PAIRS])
    hashes = {load_dataset(str(p)).sha256 for p in (jsonl, alpaca_jsonl, js, adv)}
    assert len(hashes) == 1
    assert hashes == {content_sha256(Example(p, r) for p, r in PAIRS)}

    prompts = ["alpha", "beta"]
    txt = tmp_path / "p.txt"
    txt.write_text("\n".join(prompts) + "\n", "utf-8")
    hb = write_csv(tmp_path / "p.csv", ["Behavior"], [[p] for p in prompts])
    pj = write_jsonl(tmp_path / "p.jsonl", [{"prompt": p} for p in prompts])
    assert load_dataset(str(txt)).sha256 == load_dataset(str(hb)).sha256 == load_dataset(str(pj)).sha256


def test_hash_is_content_and_order_sensitive(tmp_path):
    a = Dataset("x", (Example("p", "r"), Example("q")))
    assert a.sha256 == Dataset("other name", (Example("p", "r"), Example("q"))).sha256
    assert a.sha256 != Dataset("x", (Example("q"), Example("p", "r"))).sha256
    assert a.sha256 != Dataset("x", (Example("p", "r"), Example("q", ""))).sha256
    assert len(a.sha256) == 64
    with pytest.raises(ValueError):
        Dataset("x", (Example("p"),), sha256="0" * 64)


def test_take_and_limit(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"p{i}", "response": f"r{i}"} for i in range(5)])
    ds = load_dataset(str(path))
    two = ds.take(2)
    assert two.name == ds.name
    assert [e.prompt for e in two.examples] == ["p0", "p1"]
    assert two.sha256 == content_sha256(ds.examples[:2]) != ds.sha256
    assert ds.take(None) is ds
    assert ds.take(99).examples == ds.examples
    assert len(ds.take(0)) == 0
    with pytest.raises(ValueError):
        ds.take(-1)
    limited = load_dataset(str(path), limit=3)
    assert limited.examples == ds.examples[:3] and limited.sha256 == ds.take(3).sha256
    with pytest.raises(ValueError):
        load_dataset(str(path), limit=0)


# ---------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    err = expect_error(tmp_path / "nope.jsonl", line=None, field=None)
    assert "not found" in str(err)


def test_unsupported_extension(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_text("x", "utf-8")
    err = expect_error(path, line=None, field=None)
    assert ".jsonl" in str(err)


def test_jsonl_invalid_json_names_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps({"prompt": f"p{i}"}) for i in range(6)] + ['{"prompt": "oops",']
    path.write_text("\n".join(lines) + "\n", "utf-8")
    err = expect_error(path, line=7, field=None)
    assert "invalid JSON" in str(err)
    assert str(err).startswith(f"{path}, line 7: invalid JSON (")


@pytest.mark.parametrize(
    "record, field, reason",
    [
        ({"response": "r"}, "prompt", "missing"),
        ({"prompt": None}, "prompt", "missing"),
        ({"prompt": ""}, "prompt", "non-empty string"),
        ({"prompt": "   "}, "prompt", "non-empty string"),
        ({"prompt": 3}, "prompt", "non-empty string"),
        ({"prompt": "ok", "response": 5}, "response", "string"),
        ({"instruction": "", "output": "x"}, "instruction", "non-empty string"),
        ({"instruction": "ok", "input": 1, "output": "x"}, "input", "string"),
    ],
)
def test_jsonl_bad_field_names_line_and_field(tmp_path, record, field, reason):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "fine", "response": "ok"}, {"prompt": "x"}, record])
    err = expect_error(path, line=3, field=field)
    assert reason in str(err)


def test_jsonl_non_object_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a"}\n["a", "b"]\n', "utf-8")
    assert "JSON object" in str(expect_error(path, line=2, field=None))


def test_require_response_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "response": "b"}, {"prompt": "c"}])
    assert len(load_dataset(str(path))) == 2
    err = expect_error(path, line=2, field="response", require_response=True)
    assert "missing" in str(err)


def test_require_response_alpaca_names_output(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "c"}])
    expect_error(path, line=2, field="output", require_response=True)


def test_require_response_txt(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("\n\nonly a prompt\n", "utf-8")
    expect_error(path, line=3, field="response", require_response=True)


def test_json_bad_record_line_is_where_object_starts(tmp_path):
    path = tmp_path / "bad.json"
    records = [
        {"instruction": "a", "input": "", "output": "b"},
        {"instruction": "c", "input": "", "output": "d"},
        {"input": "x", "output": "y"},
    ]
    path.write_text(json.dumps(records, indent=2), "utf-8")
    # indent=2 puts each object on 5 lines after the opening "[" line: starts at 2, 7, 12.
    assert path.read_text("utf-8").splitlines()[11].strip() == "{"
    expect_error(path, line=12, field="prompt")


def test_json_invalid_and_wrong_shape(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n{"prompt": "a"},\n{"prompt": }\n]', "utf-8")
    assert "invalid JSON" in str(expect_error(path, line=3, field=None))
    path.write_text('{"prompt": "a"}', "utf-8")
    assert "list" in str(expect_error(path, line=1, field=None))


def test_csv_unknown_header(tmp_path):
    path = write_csv(tmp_path / "x.csv", ["question", "answer"], [["a", "b"]])
    err = expect_error(path, line=1, field=None)
    assert "goal" in str(err) and "Behavior" in str(err)


def test_csv_empty_goal(tmp_path):
    path = write_csv(tmp_path / "adv.csv", ["goal", "target"], [["a", "b"], ["c", "d"], ["", "e"]])
    err = expect_error(path, line=4, field="goal")
    assert "non-empty" in str(err)


def test_csv_line_numbers_count_multiline_cells(tmp_path):
    path = write_csv(tmp_path / "adv.csv", ["goal", "target"], [["a\nb\nc", "x"], ["  ", "y"]])
    expect_error(path, line=5, field="goal")


def test_csv_empty_behavior_and_missing_target(tmp_path):
    hb = write_csv(tmp_path / "hb.csv", ["Behavior", "ContextString"], [["ok", ""], ["", "ctx"]])
    expect_error(hb, line=3, field="Behavior")
    adv = write_csv(tmp_path / "adv.csv", ["goal", "target"], [["a", "b"], ["c", ""]])
    assert load_dataset(str(adv)).examples[1] == Example("c")
    expect_error(adv, line=3, field="target", require_response=True)


def test_invalid_utf8_names_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "\xff\xfe"}\n')
    assert "UTF-8" in str(expect_error(path, line=3, field=None))


@pytest.mark.parametrize(
    "name, content", [("e.jsonl", "\n\n"), ("e.txt", "  \n"), ("e.json", "[]"), ("e.csv", "goal,target\n")]
)
def test_empty_dataset_is_an_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, "utf-8")
    assert "empty" in str(expect_error(path, line=None, field=None))


def test_error_pickles_with_attributes(tmp_path):
    err = DatasetError("missing", path="f.jsonl", line=7, field="prompt")
    assert str(err) == "f.jsonl, line 7, field 'prompt': missing"
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.path, back.line, back.field) == (str(err), "f.jsonl", 7, "prompt")
    assert isinstance(back, ValueError)


def test_unknown_builtin_lists_names():
    with pytest.raises(DatasetError) as info:
        load_dataset("builtin:does-not-exist")
    for name in builtin_names():
        assert f"builtin:{name}" in str(info.value)


def test_hf_without_datasets_package_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DatasetError) as info:
        load_dataset("hf:someorg/someset:test")
    assert "`datasets`" in str(info.value)
    assert "hf:someorg/someset:test" in str(info.value)
    with pytest.raises(DatasetError):
        load_dataset("hf:no-slash")


def test_hf_maps_columns(monkeypatch):
    import sys
    import types

    rows = [{"goal": "g1", "target": "t1", "other": 1}, {"goal": "g2", "target": "", "other": 2}]

    class FakeTable(list):
        column_names = ["goal", "target", "other"]

    fake = types.ModuleType("datasets")
    calls = []

    def fake_load(name, split):
        calls.append((name, split))
        return FakeTable(rows)

    fake.load_dataset = fake_load
    monkeypatch.setitem(sys.modules, "datasets", fake)
    ds = load_dataset("hf:org/adv")
    assert calls == [("org/adv", "train")]
    assert ds.name == "hf:org/adv:train"
    assert ds.examples == (Example("g1", "t1"), Example("g2"))
    with pytest.raises(DatasetError) as info:
        load_dataset("hf:org/adv:test", require_response=True)
    assert "row 2" in str(info.value) and "'target'" in str(info.value)

    def offline(name, split):
        raise ConnectionError("no network")

    fake.load_dataset = offline
    with pytest.raises(DatasetError) as info:
        load_dataset("hf:org/adv")
    assert "hub" in str(info.value) and "no network" in str(info.value)


# ---------------------------------------------------------------------------- builtin sets

BUILTIN_COUNTS = {
    "safety": (120, True),
    "utility": (120, True),
    "harmful_eval": (100, False),
    "harmless_eval": (100, False),
    "benign_text": (60, False),
    "align_refusal": (120, True),
    "benign_sft": (150, True),
}


def _normalise(prompt):
    return " ".join(prompt.lower().split())


def test_builtin_names_are_the_shipped_sets():
    assert builtin_names() == sorted(BUILTIN_COUNTS)


@pytest.mark.parametrize("name", sorted(BUILTIN_COUNTS))
def test_builtin_sets_load_with_promised_counts(name):
    count, paired = BUILTIN_COUNTS[name]
    ds = load_dataset(f"builtin:{name}", require_response=paired)
    assert ds.name == f"builtin:{name}"
    assert len(ds) == count
    assert all(e.prompt.strip() == e.prompt and e.prompt for e in ds.examples)
    if paired:
        assert all(e.response and e.response.strip() for e in ds.examples)
    else:
        assert all(e.response is None for e in ds.examples)
    assert len({_normalise(e.prompt) for e in ds.examples}) == count  # no duplicates inside a set
    assert load_dataset(f"builtin:{name}").sha256 == ds.sha256  # stable across loads


def test_builtin_sets_are_pairwise_disjoint():
    prompts = {n: {_normalise(e.prompt) for e in load_dataset(f"builtin:{n}").examples} for n in BUILTIN_COUNTS}
    for a, b in itertools.combinations(sorted(prompts), 2):
        assert not prompts[a] & prompts[b], (a, b, sorted(prompts[a] & prompts[b])[:3])


def test_builtin_refusals_and_answers_look_right():
    refusal_openings = (
        "I can't",
        "I won't",
        "I'm sorry",
        "I'm not",
        "That's not",
        "Sorry",
        "No",
        "I'm really",
        "That's",
    )
    for name in ("safety", "align_refusal"):
        for ex in load_dataset(f"builtin:{name}").examples:
            assert ex.response.startswith(refusal_openings), (name, ex.response)
            assert len(ex.response.split()) <= 70
    words = [len(e.response.split()) for e in load_dataset("builtin:utility").examples]
    assert min(words) >= 40 and max(words) <= 150
    for ex in load_dataset("builtin:benign_text").examples:
        assert 60 <= len(ex.prompt.split()) <= 120


def test_builtin_take_keeps_a_prefix():
    full = load_dataset("builtin:safety")
    first = load_dataset("builtin:safety", limit=15)
    assert first.examples == full.examples[:15] == full.take(15).examples
    assert first.sha256 != full.sha256
