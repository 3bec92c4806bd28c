import json

import pytest

from ssah.cli import main
from tests.engine.conftest import write_jsonl


def test_audit_ablate_transfer_on_a_tiny_model(tmp_path, capsys):
    safety = write_jsonl(
        tmp_path / "s.jsonl", [{"prompt": f"bad thing {i}", "response": f"Sorry, no {i}."} for i in range(10)]
    )
    utility = write_jsonl(
        tmp_path / "u.jsonl", [{"prompt": f"add {i} and 1", "response": f"It is {i + 1}."} for i in range(10)]
    )
    common = ["--model", "builtin:tiny-llama", "--safety-data", safety, "--utility-data", utility]
    assert main(["audit", *common, "--samples", "8", "--cuts", "0.1,0.05,0.1", "--out", str(tmp_path / "map")]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "map" / "summary.json").read_text())
    assert "| class | heads | neurons |" in out
    assert f"{summary['classes']['RU']['neurons']}" in out
    assert summary["data"]["safety"]["pairs"] == 8

    assert (
        main(
            [
                "ablate",
                *common,
                "--units",
                str(tmp_path / "map"),
                "--class",
                "RU",
                "--samples",
                "4",
                "--out",
                str(tmp_path / "ablate.json"),
            ]
        )
        == 0
    )
    ablation = json.loads((tmp_path / "ablate.json").read_text())
    assert ablation["units"] == summary["classes"]["RU"]["units"]
    assert ablation["dense"] != ablation["ablated"]

    assert main(["transfer", str(tmp_path / "map"), str(tmp_path / "map"), "--out", str(tmp_path / "t.json")]) == 0
    assert json.loads((tmp_path / "t.json").read_text())["unchanged_fraction"] == 1.0


def test_malformed_dataset_gives_file_line_and_field(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine", "response": "ok"}\n{"response": "no prompt here"}\n')
    code = main(["audit", "--model", "builtin:tiny-llama", "--safety-data", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "bad.jsonl" in err and "line 2" in err and "'prompt'" in err


def test_bad_cuts_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:  # refused while the flags are parsed, before a model loads
        main(["audit", "--model", "builtin:tiny-llama", "--cuts", "0.1,2,0.1", "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2
    assert "argument --cuts: cut SCU must be a fraction" in capsys.readouterr().err


def test_a_command_whose_extra_is_missing_names_the_extra(monkeypatch, capsys):
    from ssah.commands import serve

    def without_fastapi(args):
        raise ModuleNotFoundError("No module named 'fastapi'", name="fastapi")

    monkeypatch.setattr(serve, "run", without_fastapi)
    assert main(["serve"]) == 2
    assert "pip install 'ssah-audit[service]'" in capsys.readouterr().err
