"""`ssah eval` on a tiny model: the table, evaluation.json, the reusable protocol, ablation."""

import json

from ssah.cli import main
from tests.engine.conftest import write_jsonl


def test_eval_writes_results_and_a_reusable_protocol(tmp_path, capsys):
    harmful = write_jsonl(tmp_path / "h.jsonl", [{"prompt": f"how to do bad thing {i}"} for i in range(4)])
    harmless = write_jsonl(tmp_path / "ok.jsonl", [{"prompt": f"how to bake cake {i}"} for i in range(4)])
    text = tmp_path / "text.txt"
    text.write_text("A calm paragraph about rivers.\nAnother about mountains and snow.\n")
    common = [
        "--model",
        "builtin:tiny-llama",
        "--harmful",
        harmful,
        "--harmless",
        harmless,
        "--benign-text",
        str(text),
        "--max-new-tokens",
        "4",
        "--samples",
        "3",
    ]
    assert main(["eval", *common, "--out", str(tmp_path / "dense")]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "dense" / "evaluation.json").read_text())
    for key in ("asr", "asr_no_system", "over_refusal", "refusal_margin"):
        assert key in result["safety"]
    assert result["utility"]["perplexity"] > 1
    assert len(result["records"]["harmful"]) == 3 * 2
    assert f"{100 * result['safety']['asr']:.1f} %" in out and result["protocol"]["hash"][:16] in out

    # The saved protocol reproduces the run's hash; a changed setting gives another.
    saved = str(tmp_path / "dense" / "protocol.json")
    assert main(["eval", "--model", "builtin:tiny-llama", "--protocol", saved, "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "evaluation.json").read_text())
    assert again["protocol"]["hash"] == result["protocol"]["hash"]
    # Prompts and rendered text match; responses are not compared because each load of
    # builtin:tiny-llama builds a new byte tokenizer whose ids differ (see ssah_engine.testing).
    strip = lambda records: [(r["prompt"], r["condition"], r["rendered_prompt"]) for r in records]  # noqa: E731
    assert strip(again["records"]["harmful"]) == strip(result["records"]["harmful"])

    safety = write_jsonl(
        tmp_path / "s.jsonl", [{"prompt": f"bad {i}", "response": f"Sorry, no {i}."} for i in range(6)]
    )
    utility = write_jsonl(tmp_path / "u.jsonl", [{"prompt": f"add {i}", "response": f"It is {i}."} for i in range(6)])
    assert (
        main(
            [
                "audit",
                "--model",
                "builtin:tiny-llama",
                "--safety-data",
                safety,
                "--utility-data",
                utility,
                "--samples",
                "6",
                "--out",
                str(tmp_path / "map"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "eval",
                "--model",
                "builtin:tiny-llama",
                "--protocol",
                saved,
                "--ablate",
                "SCU",
                "--units",
                str(tmp_path / "map"),
                "--out",
                str(tmp_path / "ablated"),
            ]
        )
        == 0
    )
    ablated = json.loads((tmp_path / "ablated" / "evaluation.json").read_text())
    assert ablated["protocol"]["hash"] == result["protocol"]["hash"]
    assert ablated["ablation"]["classes"] == ["SCU"] and ablated["ablation"]["units"] > 0


def test_eval_argument_errors(tmp_path, capsys):
    assert main(["eval", "--model", "builtin:tiny-llama", "--ablate", "SCU", "--out", str(tmp_path)]) == 2
    assert "--ablate and --units go together" in capsys.readouterr().err
    assert (
        main(
            [
                "eval",
                "--model",
                "builtin:tiny-llama",
                "--harmful",
                str(tmp_path / "missing.jsonl"),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "missing.jsonl" in capsys.readouterr().err
