"""Named safety benchmarks: ``bench:NAME[/SUBSET][=PATH]``, each described once in ``BENCHMARKS``.

Without ``=PATH`` the set is read from its hub repository (the `datasets` package; HEx-PHI through
`huggingface_hub`, with the user's own access); with ``=PATH`` the same column map reads a local copy
in the benchmark's own file layout. Every example keeps the benchmark's id and category where it has
them. A revision of None means unpinned: the protocol's content hash still catches a changed set.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .columns import ColumnMap, Row, RowFilter, hub_table, numbered, read_lines_csv, read_table, rows_to_examples
from .examples import Dataset, DatasetError, Example

BENCH_PREFIX = "bench:"
HARMFUL, HARMLESS = "harmful", "harmless"  # which prompt set of an evaluation a subset is meant for


@dataclass(frozen=True)
class Subset:
    """One part of a benchmark: the evaluation set it is for, and where its rows are."""

    role: str
    config: str | None = None  # hub config; None: the benchmark's
    split: str | None = None  # hub split; None: the benchmark's
    keep: RowFilter | None = None  # which rows of a table holding several subsets are this one's


@dataclass(frozen=True)
class Benchmark:
    """Where a benchmark lives, how its columns map to examples, and under which licence."""

    name: str
    title: str
    repo: str
    revision: str | None
    revision_note: str
    split: str
    columns: ColumnMap
    subsets: Mapping[str, Subset]
    default_subset: str
    licence: str
    homepage: str
    local_file: str  # the layout ``=PATH`` expects
    config: str | None = None
    gated: bool = False
    files: Mapping[str, str] = field(default_factory=dict)  # header-less files -> category (HEx-PHI)

    def subset(self, name: str | None) -> tuple[str, Subset]:
        name = name or self.default_subset
        if name not in self.subsets:
            known = ", ".join(f"{BENCH_PREFIX}{self.name}/{s}" for s in self.subsets)
            raise DatasetError(f"{self.title} has no subset {name!r}; subsets: {known}")
        return name, self.subsets[name]


def _functional_category(name: str) -> RowFilter:
    # HarmBench's CSV holds all three subsets; a hub config holds one and has no such column.
    return lambda row: str(row.get("functionalcategory") or name).strip().lower() == name


def _xstest_label(label: str) -> RowFilter:
    def keep(row: Mapping) -> bool:
        value = row.get("label")
        if isinstance(value, str) and value.strip():
            return value.strip().lower() == label
        unsafe = str(row.get("type") or "").strip().lower().startswith("contrast")
        return unsafe == (label == "unsafe")

    return keep


HEX_PHI_CATEGORIES = {
    1: "Illegal Activity",
    2: "Child Abuse Content",
    3: "Hate/Harass/Violence",
    4: "Malware",
    5: "Physical Harm",
    6: "Economic Harm",
    7: "Fraud/Deception",
    8: "Adult Content",
    9: "Political Campaigning",
    10: "Privacy Violation Activity",
    11: "Tailored Financial Advice",
}

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            name="advbench",
            title="AdvBench harmful behaviours (Zou et al., 2023)",
            repo="walledai/AdvBench",
            revision=None,
            revision_note="unpinned: only short commit ids of the hub mirror were seen here",
            split="train",
            columns=ColumnMap(prompt=("goal", "prompt"), response=("target",)),
            subsets={"all": Subset(HARMFUL)},
            default_subset="all",
            licence="MIT",
            homepage="https://github.com/llm-attacks/llm-attacks (data/advbench/harmful_behaviors.csv)",
            local_file="harmful_behaviors.csv: goal,target",
        ),
        Benchmark(
            name="harmbench",
            title="HarmBench text behaviours (Mazeika et al., 2024)",
            repo="walledai/HarmBench",
            revision="71c5e5411366e2ffff9b3a55fc47493d3aa56dfb",
            revision_note="the mirror's last 'Upload dataset' commit in its hub history (not fetched here)",
            split="train",
            columns=ColumnMap(
                prompt=("behavior", "prompt"),
                id=("behaviorid",),
                category=("semanticcategory", "category"),
                context=("contextstring", "context"),
            ),
            subsets={
                name: Subset(HARMFUL, config=name, keep=_functional_category(name))
                for name in ("standard", "contextual", "copyright")
            },
            default_subset="standard",
            licence="MIT",
            homepage="https://github.com/centerforaisafety/HarmBench (data/behavior_datasets/)",
            local_file="harmbench_behaviors_text_all.csv (or _test/_val): Behavior, FunctionalCategory, "
            "SemanticCategory, Tags, ContextString, BehaviorID; the subset picks rows by FunctionalCategory",
        ),
        Benchmark(
            name="jbb",
            title="JailbreakBench JBB-Behaviors (Chao et al., 2024)",
            repo="JailbreakBench/JBB-Behaviors",
            revision="c19227d7c9c40307a0999365779c13cd1a5116d0",
            revision_note="the newest commit in the repo's hub history as seen here (not fetched here)",
            config="behaviors",
            split="harmful",
            columns=ColumnMap(prompt=("goal",), response=("target",), id=("index",), category=("category",)),
            subsets={"harmful": Subset(HARMFUL, split="harmful"), "benign": Subset(HARMLESS, split="benign")},
            default_subset="harmful",
            licence="MIT",
            homepage="https://github.com/JailbreakBench/jailbreakbench",
            local_file="data/harmful-behaviors.csv or data/benign-behaviors.csv: Index, Goal, Target, "
            "Behavior, Category, Source",
        ),
        Benchmark(
            name="strongreject",
            title="StrongREJECT forbidden prompts (Souly et al., 2024)",
            repo="walledai/StrongREJECT",
            revision=None,
            revision_note="unpinned: no commit id of the hub mirror was seen here",
            split="train",
            columns=ColumnMap(prompt=("forbidden_prompt", "prompt"), category=("category",)),
            subsets={"all": Subset(HARMFUL)},
            default_subset="all",
            licence="MIT (questions taken from earlier sets keep their own licences)",
            homepage="https://github.com/alexandrasouly/strongreject (strongreject_dataset/)",
            local_file="strongreject_dataset.csv: category, source, forbidden_prompt",
        ),
        Benchmark(
            name="xstest",
            title="XSTest exaggerated-safety prompts (Röttger et al., 2024)",
            repo="Paul/XSTest",
            revision=None,
            revision_note="unpinned: no commit id of the hub repo was seen here",
            split="train",
            columns=ColumnMap(prompt=("prompt",), id=("id",), category=("type",)),
            subsets={
                "safe": Subset(HARMLESS, keep=_xstest_label("safe")),
                "unsafe": Subset(HARMFUL, keep=_xstest_label("unsafe")),
            },
            default_subset="safe",
            licence="CC-BY-4.0",
            homepage="https://github.com/paul-rottger/exaggerated-safety (xstest_prompts.csv)",
            local_file="xstest_prompts.csv: id, prompt, type, label (safe/unsafe; without it, "
            "types starting with contrast_ are the unsafe ones), focus, note",
        ),
        Benchmark(
            name="hex-phi",
            title="HEx-PHI harmful instructions (Qi et al., 2024)",
            repo="LLM-Tuning-Safety/HEx-PHI",
            revision=None,
            revision_note="unpinned: gated, never opened here",
            split="train",
            columns=ColumnMap(prompt=("prompt",), category=("category",)),
            subsets={"all": Subset(HARMFUL)},
            default_subset="all",
            licence="HEx-PHI's own licence agreement, accepted on the hub page (gated; no redistribution)",
            homepage="https://huggingface.co/datasets/LLM-Tuning-Safety/HEx-PHI",
            local_file="a folder of category_N.csv files (one instruction per row, no header) or one such file",
            gated=True,
            # category_2 (child abuse content) is reported missing upstream: 10 files of 30, not 11
            files={f"category_{n}.csv": label for n, label in HEX_PHI_CATEGORIES.items() if n != 2},
        ),
    )
}


def benchmark_names() -> list[str]:
    """Every ``bench:NAME/SUBSET`` source, in registry order."""
    return [f"{BENCH_PREFIX}{b.name}/{s}" for b in BENCHMARKS.values() for s in b.subsets]


def parse_bench(source: str) -> tuple[Benchmark, str, Subset, str | None]:
    """(benchmark, subset name, subset, local path or None) of ``bench:NAME[/SUBSET][=PATH]``."""
    spec = source.removeprefix(BENCH_PREFIX)
    head, sep, path = spec.partition("=")
    if sep and not path:
        raise DatasetError(f"{source!r}: nothing after '='; expected {BENCH_PREFIX}NAME[/SUBSET][=PATH]")
    name, _, subset_name = head.partition("/")
    bench = BENCHMARKS.get(name)
    if bench is None:
        known = ", ".join(f"{BENCH_PREFIX}{n}" for n in BENCHMARKS)
        raise DatasetError(f"unknown benchmark {name!r} in {source!r}; known: {known}")
    subset_name, subset = bench.subset(subset_name or None)
    return bench, subset_name, subset, path or None


def benchmark_role(source: str) -> str | None:
    """``harmful`` or ``harmless``: the evaluation set a ``bench:`` source is meant for; None for others."""
    if not source.startswith(BENCH_PREFIX):
        return None
    return parse_bench(source)[2].role


def load_benchmark(source: str, require_response: bool = False) -> Dataset:
    """Load ``bench:NAME[/SUBSET][=PATH]``: from the hub, or from a local copy at PATH."""
    bench, subset_name, subset, path = parse_bench(source)
    label = f"{BENCH_PREFIX}{bench.name}/{subset_name}" + (f"={path}" if path else "")
    if bench.files:
        examples = _load_files(bench, path, label, require_response)
        return Dataset(name=label, examples=tuple(examples))
    rows: Iterable[tuple[int, Row]]
    if path:
        columns, rows, line_label = read_table(path)
        where = path
    else:
        columns, table = hub_table(
            bench.repo,
            config=subset.config or bench.config,
            split=subset.split or bench.split,
            revision=bench.revision,
            label=label,
        )
        rows, line_label, where = numbered(table), "row", label
    examples = rows_to_examples(
        rows,
        columns,
        bench.columns,
        label=where,
        require_response=require_response,
        line_label=line_label,
        keep=subset.keep,
    )
    return Dataset(name=label, examples=tuple(examples))


# ---------------------------------------------------------------------------- HEx-PHI's category files

_CATEGORY_FILE = re.compile(r"^category_(\d+)\.csv$", re.IGNORECASE)


def _load_files(bench: Benchmark, path: str | None, label: str, require_response: bool) -> list[Example]:
    if require_response:
        raise DatasetError(f"{bench.title} holds prompts only, but a response is required", path=label)
    files: list[tuple[str, str, str | None]]
    if path is None:
        files = [(name, _download(bench, name, label), category) for name, category in bench.files.items()]
    else:
        files = _local_files(bench, Path(path))
    examples = []
    for name, file_path, category in files:
        rows = [(line, {"prompt": text, "category": category}) for line, text in read_lines_csv(file_path)]
        if rows:
            examples += rows_to_examples(
                rows, ["prompt", "category"], bench.columns, label=file_path, require_response=False, line_label="line"
            )
    if not examples:
        raise DatasetError("the dataset is empty (no examples found)", path=path or label)
    return examples


def _local_files(bench: Benchmark, path: Path) -> list[tuple[str, str, str | None]]:
    def category(name: str) -> str | None:
        match = _CATEGORY_FILE.match(name)
        return HEX_PHI_CATEGORIES.get(int(match.group(1))) if match else None

    if path.is_file():
        return [(path.name, str(path), category(path.name))]
    if not path.is_dir():
        raise DatasetError("file or folder not found", path=str(path))
    found = sorted(
        (p for p in path.iterdir() if p.is_file() and _CATEGORY_FILE.match(p.name)),
        key=lambda p: int(_CATEGORY_FILE.match(p.name).group(1)),  # type: ignore[union-attr]
    )
    if not found:
        raise DatasetError(f"no category_N.csv files in this folder; {bench.local_file}", path=str(path))
    return [(p.name, str(p), category(p.name)) for p in found]


def _download(bench: Benchmark, filename: str, label: str) -> str:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise DatasetError(
            "the `huggingface_hub` package is needed (pip install huggingface_hub)", path=label
        ) from None
    try:
        return hf_hub_download(bench.repo, filename, repo_type="dataset", revision=bench.revision)
    except Exception as exc:  # gated, offline, missing file: all end the load with the reason
        gated = any(cls.__name__ == "GatedRepoError" for cls in type(exc).__mro__) or any(
            code in str(exc) for code in ("401", "403")
        )
        hint = (
            f"{bench.title} is gated: request access with your own Hugging Face account at "
            f"https://huggingface.co/datasets/{bench.repo}, accept its licence, and log in on this machine "
            f"(huggingface-cli login, or HF_TOKEN); or download the category files yourself and pass "
            f"{BENCH_PREFIX}{bench.name}=FOLDER"
            if gated
            else f"could not download {filename} from the Hugging Face hub; {BENCH_PREFIX}{bench.name}=FOLDER reads a local copy"
        )
        raise DatasetError(f"{hint} ({type(exc).__name__}: {exc})", path=label) from exc
