# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The results page of a benchmark run: our numbers beside the papers', as markdown tables and one PNG heat map.

Input: the ``results.csv`` of ``anomalib-clipad benchmark`` (one row per job) and, optionally, the benchmark
configuration with its ``published`` section (by default the configuration copy the pipeline writes beside the CSV).
Output: ``<out>/<name>.md`` and ``<out>/<name>.png`` (``name``: the configuration's file name without ``.yaml``).

* One section per dataset and model: a table of the means over categories, one row per setting (``k_shot``), and a
  table per setting with one row per category. A cell is ours, or ``ours (paper P, Δ D)`` where the configuration
  publishes a number for that model, dataset, setting (and category), with ``D = ours - P`` in points.
* Metrics are in % (the CSV's values x 100, rounded to ``decimals``), time per image in ms (``seconds_per_image`` x
  1000), throughput in images per second (``images_per_second``: test images / wall time of ``Engine.test``) and
  the job's peak memory in MiB (``peak_memory_MiB``; its header says how it was measured, the CSV's
  ``peak_memory_source``: CUDA memory allocated on a GPU, the increase of the process's peak RSS on a CPU, see
  :mod:`anomalib_clipad.benchmarks.memory`). A category run several times (e.g. seeds) shows the mean of its runs;
  the mean over categories is the mean of the categories' values, over the categories whose job succeeded (the
  ``categories`` column counts them).
* Failed jobs are listed with their error; they are left out of every mean.
* The heat map shows our mean of each metric per dataset, model and setting (annotated with Δ where published).
* A run with deployment rows (``anomalib-clipad benchmark --deploy openvino:<precision>``, the CSV's ``deploy``,
  ``runtime`` and ``precision`` columns; :mod:`anomalib_clipad.benchmarks.deploy`) gets a ``deployment`` column:
  ``torch f32`` beside ``openvino <precision>``, in the means (one row per setting and deployment) and per category
  (each category's rows together, torch first), every row with its own metrics, time per image, throughput and
  peak memory. A CSV of torch rows only gives the page without that column.

The ``published`` section of a benchmark configuration::

    published:
      paper: "WinCLIP (Jeong et al., CVPR 2023)"
      source: "Tables 1 and 4, mean over 5 seeds"
      dataset: MVTecAD            # default dataset of the entries
      decimals: 1                 # digits shown (default 1)
      results:
        - model: WinCLIPPlus      # the `model` column: the model's class name
          k_shot: 0               # leave out for a model without k_shot
          mean: {image_AUROC: 91.8, pixel_AUROC: 85.1, pixel_AUPRO: 64.6}
          per_category: {bottle: {pixel_AUROC: 97.28}}   # optional
          ms_per_image: 389.4     # optional, with the paper's hardware in `note` (shown, not differenced)
          note: "..."

Numbers are in % like the papers. Without ``mean``, the mean of the ``per_category`` values of each metric is shown
(said under the table). The metric names are the CSV's columns (:data:`anomalib_clipad.benchmarks.pipeline.METRICS`).

Example:
    .. code-block:: bash

        anomalib-clipad results --csv runs/benchmark/<timestamp>/results.csv --out docs/results
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

__all__ = [
    "DEPLOYMENT_COLUMN",
    "METRIC_ORDER",
    "PublishedEntry",
    "build_markdown",
    "find_config",
    "load_published",
    "load_results",
    "memory_header",
    "plot_heat_map",
    "write_results_page",
]

METRIC_ORDER = (
    "image_AUROC",
    "image_AP",
    "image_AUPR",
    "image_F1Score",
    "image_F1Max",
    "pixel_AUROC",
    "pixel_AUPRO",
    "pixel_F1Score",
    "pixel_F1Max",
)
"""The metric columns a page shows, in this order (those present in the CSV or in the published numbers)."""

TIME_COLUMN = "seconds_per_image"
TIME_HEADER = "ms / image"
THROUGHPUT_COLUMN = "images_per_second"
THROUGHPUT_HEADER = "images / s"
MEMORY_COLUMN = "peak_memory_MiB"
MEMORY_SOURCE_COLUMN = "peak_memory_source"
MEMORY_HEADER = "peak MiB"
MEMORY_SOURCES = {
    "cuda_max_memory_allocated": "CUDA allocated",
    "rss_peak_increase": "RSS increase",
    "ru_maxrss_increase": "max RSS increase",
}
"""How the page names each ``peak_memory_source`` of :mod:`anomalib_clipad.benchmarks.memory` in its header."""
NOT_AVAILABLE = "—"
DEPLOYMENT_COLUMN = "deployment"
"""The column :func:`load_results` adds: ``torch f32``, ``openvino int8_ptq``, ... (the page's header too)."""
TORCH_LABEL = "torch f32"
_RESOURCE_COLUMNS = (TIME_COLUMN, THROUGHPUT_COLUMN, MEMORY_COLUMN)


@dataclass
class PublishedEntry:
    """The published numbers (in %) of one model, dataset and setting.

    Attributes:
        model: The model's class name (the CSV's ``model`` column).
        dataset: The datamodule's class name (``MVTecAD``, ``Visa``).
        k_shot: The setting, ``None`` for a model without ``k_shot``.
        mean: Metric -> the paper's mean over categories.
        per_category: Category -> metric -> value.
        ms_per_image: The paper's inference time per image (ms), if it gives one.
        note: Free text shown under the tables.
        mean_is_derived: ``True`` when ``mean`` was computed from ``per_category`` (the paper gives no mean).
    """

    model: str
    dataset: str
    k_shot: int | None = None
    mean: dict[str, float] = field(default_factory=dict)
    per_category: dict[str, dict[str, float]] = field(default_factory=dict)
    ms_per_image: float | None = None
    note: str | None = None
    mean_is_derived: bool = False


@dataclass
class Published:
    """The ``published`` section of a configuration."""

    paper: str | None = None
    source: str | None = None
    decimals: int = 1
    entries: list[PublishedEntry] = field(default_factory=list)

    def find(self, model: str, dataset: str, k_shot: int | None) -> PublishedEntry | None:
        """The entry of ``model`` on ``dataset`` in setting ``k_shot``, if published."""
        for entry in self.entries:
            if entry.model == model and entry.dataset == dataset and entry.k_shot == k_shot:
                return entry
        return None


def _as_k_shot(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else int(number)


def load_published(config: dict[str, Any] | None) -> Published:
    """The published numbers of a benchmark configuration (empty when it has no ``published`` section).

    Args:
        config: The parsed benchmark configuration, or ``None``.

    Returns:
        The section, with derived means where an entry gives per-category values only.

    Raises:
        ValueError: If the section is malformed (an entry without ``model`` or without a dataset).
    """
    section = (config or {}).get("published") or {}
    published = Published(
        paper=section.get("paper"), source=section.get("source"), decimals=int(section.get("decimals", 1))
    )
    default_dataset = section.get("dataset")
    for index, item in enumerate(section.get("results") or []):
        if not isinstance(item, dict) or "model" not in item:
            msg = f"published.results[{index}] must be a mapping with a 'model' entry, got {item!r}."
            raise ValueError(msg)
        dataset = item.get("dataset", default_dataset)
        if dataset is None:
            msg = f"published.results[{index}] has no dataset (set published.dataset or the entry's dataset)."
            raise ValueError(msg)
        per_category = {
            str(category): {str(name): float(value) for name, value in (values or {}).items()}
            for category, values in (item.get("per_category") or {}).items()
        }
        mean = {str(name): float(value) for name, value in (item.get("mean") or {}).items()}
        derived = False
        if not mean and per_category:
            names = {name for values in per_category.values() for name in values}
            for name in names:
                values = [values[name] for values in per_category.values() if name in values]
                mean[name] = sum(values) / len(values)
            derived = True
        published.entries.append(
            PublishedEntry(
                model=str(item["model"]),
                dataset=str(dataset),
                k_shot=_as_k_shot(item.get("k_shot")),
                mean=mean,
                per_category=per_category,
                ms_per_image=None if item.get("ms_per_image") is None else float(item["ms_per_image"]),
                note=item.get("note"),
                mean_is_derived=derived,
            )
        )
    return published


def _short(value: Any) -> str:
    return str(value).rsplit(".", 1)[-1]


def load_results(csv_path: str | Path) -> pd.DataFrame:
    """The results of a benchmark run, with the columns the page groups by filled in for every row.

    Args:
        csv_path: ``results.csv`` of ``anomalib-clipad benchmark``.

    Returns:
        The rows, with ``model``, ``dataset``, ``category``, ``deployment`` (strings), ``k_shot`` (nullable integer)
        and ``failed`` (bool) set from the pipeline's columns (or, for older CSVs, from the flattened configuration;
        a CSV without deployment columns is torch f32 throughout).
    """
    frame = pd.read_csv(csv_path)
    n_rows = len(frame)

    def column(name: str) -> pd.Series:
        return frame[name] if name in frame.columns else pd.Series([None] * n_rows, index=frame.index, dtype=object)

    def filled(primary: str, *fallbacks: str) -> pd.Series:
        values = column(primary).astype(object)
        for fallback in fallbacks:
            values = values.where(values.notna(), column(fallback))
        return values

    model = filled("model", "model.class_path")
    frame["model"] = [NOT_AVAILABLE if pd.isna(value) else _short(value) for value in model]
    dataset = filled("dataset", "data.class_path")
    frame["dataset"] = [NOT_AVAILABLE if pd.isna(value) else _short(value) for value in dataset]
    category = filled("category", "data.init_args.category", "data.init_args.name")
    frame["category"] = [NOT_AVAILABLE if pd.isna(value) else str(value) for value in category]
    k_shot = filled("k_shot", "model.init_args.k_shot")
    frame["k_shot"] = pd.array([_as_k_shot(value) for value in k_shot], dtype="Int64")
    error = column("error")
    frame["failed"] = error.notna() & (error.astype(str).str.strip() != "")
    frame[DEPLOYMENT_COLUMN] = [
        _deployment_label(runtime, precision, deploy)
        for runtime, precision, deploy in zip(column("runtime"), column("precision"), column("deploy"), strict=True)
    ]
    return frame


def _deployment_label(runtime: Any, precision: Any, deploy: Any) -> str:
    """``torch f32`` / ``openvino int8_ptq`` from the CSV's ``runtime`` and ``precision`` (or its ``deploy`` name)."""
    if not pd.isna(runtime) and str(runtime).strip():
        return f"{runtime} {'' if pd.isna(precision) else precision}".strip()
    if not pd.isna(deploy) and str(deploy).strip():
        runtime, _, precision = str(deploy).partition(":")
        return f"{runtime} {precision or 'f32'}"
    return TORCH_LABEL


def _deployments(frame: pd.DataFrame) -> list[str]:
    """The deployment labels of the rows: torch first, then in the CSV's order."""
    labels = list(dict.fromkeys(frame[DEPLOYMENT_COLUMN])) if DEPLOYMENT_COLUMN in frame.columns else []
    return sorted(labels, key=lambda label: not label.startswith("torch"))  # stable: keeps the CSV's order otherwise


def shows_deployments(frame: pd.DataFrame) -> bool:
    """Whether the page needs a ``deployment`` column: a row that is not torch f32."""
    return any(label != TORCH_LABEL for label in _deployments(frame))


def _setting(k_shot: int | None) -> str:
    return "default" if k_shot is None else f"{k_shot}-shot"


def _present_metrics(frame: pd.DataFrame, published: Published) -> list[str]:
    names = {name for entry in published.entries for name in entry.mean}
    names |= {name for entry in published.entries for values in entry.per_category.values() for name in values}
    return [name for name in METRIC_ORDER if (name in frame.columns and frame[name].notna().any()) or name in names]


def _format(value: float | None, decimals: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_AVAILABLE
    return f"{value:.{decimals}f}"


def _cell(ours: float | None, paper: float | None, decimals: int, *, difference: bool = True) -> str:
    """``ours``, or ``ours (paper P, Δ D)`` (``ours (paper P)`` without ``difference``); all in the page's unit."""
    text = _format(ours, decimals)
    if paper is None:
        return text
    if ours is None or math.isnan(ours) or not difference:
        return f"{text} (paper {_format(paper, decimals)})"
    # The difference of the shown (rounded) numbers, so that the three numbers of a cell agree.
    difference = round(ours, decimals) - round(paper, decimals)
    return f"{text} (paper {_format(paper, decimals)}, Δ {difference:+.{decimals}f})"


def _percent(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else 100.0 * float(value)


def _milliseconds(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else 1000.0 * float(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|").replace("\n", " ") for cell in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(row) for row in rows)]


def memory_header(frame: pd.DataFrame) -> str:
    """``peak MiB (RSS increase)``: the memory column's header, with how the successful jobs' peaks were measured.

    Args:
        frame: :func:`load_results` rows.

    Returns:
        :data:`MEMORY_HEADER`, followed by the measure (:data:`MEMORY_SOURCES`) when all successful jobs that have
        one used the same, by ``mixed`` when they used several.
    """
    if MEMORY_SOURCE_COLUMN not in frame.columns:
        return MEMORY_HEADER
    sources = sorted(set(frame.loc[~frame["failed"], MEMORY_SOURCE_COLUMN].dropna().astype(str)))
    if not sources:
        return MEMORY_HEADER
    label = MEMORY_SOURCES.get(sources[0], sources[0]) if len(sources) == 1 else "mixed"
    return f"{MEMORY_HEADER} ({label})"


def _per_category(rows: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean over the successful runs of each category (one row per category, in first-seen order)."""
    ok = rows[~rows["failed"]]
    columns = [name for name in [*metrics, *_RESOURCE_COLUMNS] if name in ok.columns]
    if ok.empty or not columns:
        return pd.DataFrame(columns=["category", "runs", *columns])
    grouped = ok.groupby("category", sort=False)
    table = grouped[columns].mean(numeric_only=True)
    table.insert(0, "runs", grouped.size())
    return table.reset_index()


def _group_order(frame: pd.DataFrame, published: Published) -> list[tuple[str, str]]:
    """``(dataset, model)`` pairs in the order of the CSV, then published-only pairs."""
    pairs = list(dict.fromkeys(zip(frame["dataset"], frame["model"], strict=True)))
    for entry in published.entries:
        if (entry.dataset, entry.model) not in pairs:
            pairs.append((entry.dataset, entry.model))
    return pairs


def _settings(frame: pd.DataFrame, published: Published, dataset: str, model: str) -> list[int | None]:
    rows = frame[(frame["dataset"] == dataset) & (frame["model"] == model)]
    settings: list[int | None] = list(dict.fromkeys(None if pd.isna(k) else int(k) for k in rows["k_shot"]))
    for entry in published.entries:
        if entry.dataset == dataset and entry.model == model and entry.k_shot not in settings:
            settings.append(entry.k_shot)
    return sorted(settings, key=lambda k: -1 if k is None else k)


def summarise(frame: pd.DataFrame, published: Published) -> list[dict[str, Any]]:
    """Our means over categories, per dataset, model, setting and deployment, with the matching published entry.

    Args:
        frame: :func:`load_results` rows.
        published: :func:`load_published` numbers.

    Returns:
        One dict per ``(dataset, model, setting, deployment)`` (a published setting that was not run: one, torch
        f32): ``dataset``, ``model``, ``k_shot``, ``deployment``, ``per_category`` (the
        per-category table in CSV units), ``mean`` (metric -> our mean in %, ``None`` when no category succeeded),
        ``ms_per_image``, ``images_per_second``, ``peak_memory_MiB`` (means over categories, ``None`` without
        values), ``n_ok``, ``n_categories`` and ``published`` (a :class:`PublishedEntry` or ``None``).
    """
    metrics = _present_metrics(frame, published)
    summaries = []
    for dataset, model in _group_order(frame, published):
        for k_shot in _settings(frame, published, dataset, model):
            selected = (frame["dataset"] == dataset) & (frame["model"] == model)
            selected &= frame["k_shot"].isna() if k_shot is None else (frame["k_shot"] == k_shot).fillna(False)
            for deployment in _deployments(frame[selected]) or [TORCH_LABEL]:
                summary = _summary(frame[selected & (frame[DEPLOYMENT_COLUMN] == deployment)], metrics)
                summary.update(dataset=dataset, model=model, k_shot=k_shot, deployment=deployment)
                summary["published"] = published.find(model, dataset, k_shot)
                summaries.append(summary)
    return summaries


def _summary(rows: pd.DataFrame, metrics: list[str]) -> dict[str, Any]:
    """The per-category table and the means over categories of the rows of one group (see :func:`summarise`)."""
    table = _per_category(rows, metrics)
    mean = {
        name: (_percent(table[name].mean()) if name in table.columns and table[name].notna().any() else None)
        for name in metrics
    }
    resources = {
        name: table[name].mean() if name in table.columns and table[name].notna().any() else None
        for name in _RESOURCE_COLUMNS
    }
    return {
        "per_category": table,
        "mean": mean,
        "ms_per_image": _milliseconds(resources[TIME_COLUMN]),
        THROUGHPUT_COLUMN: resources[THROUGHPUT_COLUMN],
        MEMORY_COLUMN: resources[MEMORY_COLUMN],
        "n_ok": len(table),
        "n_categories": rows["category"].nunique(),
    }


def _means_section(
    groups: list[dict[str, Any]], metrics: list[str], decimals: int, memory: str, *, deployments: bool = False
) -> list[str]:
    """The table of the means over categories of one dataset and model (one row per setting and deployment)."""
    header = ["setting", *([DEPLOYMENT_COLUMN] if deployments else []), "categories", *metrics]
    header += [TIME_HEADER, THROUGHPUT_HEADER, memory]
    rows = []
    notes = []
    for summary in groups:
        entry: PublishedEntry | None = summary["published"]
        cells = [_setting(summary["k_shot"]), *([summary[DEPLOYMENT_COLUMN]] if deployments else [])]
        cells.append(f"{summary['n_ok']} / {summary['n_categories']}")
        for name in metrics:
            paper = entry.mean.get(name) if entry is not None else None
            cells.append(_cell(summary["mean"].get(name), paper, decimals))
        paper_time = entry.ms_per_image if entry is not None else None  # other hardware: no difference shown
        cells.append(_cell(summary["ms_per_image"], paper_time, 1, difference=False))
        cells += [_format(summary[THROUGHPUT_COLUMN], 1), _format(summary[MEMORY_COLUMN], 0)]
        rows.append(cells)
        if entry is not None and entry.mean_is_derived:
            notes.append(
                f"{_setting(summary['k_shot'])}: the paper gives per-category values only; its mean here is the mean "
                "of those values."
            )
        if entry is not None and entry.note:
            notes.append(f"{_setting(summary['k_shot'])}: {entry.note}")
    lines = ["Mean over categories:", "", *_table(header, rows)]
    notes = list(dict.fromkeys(notes))  # a setting's notes once, whatever its number of deployments
    return lines + (["", *(f"* {note}" for note in notes)] if notes else [])


def _categories_section(
    summaries: list[dict[str, Any]], metrics: list[str], decimals: int, memory: str, *, deployments: bool = False
) -> list[str]:
    """The per-category table of one dataset, model and setting (nothing when no category succeeded).

    A row per category, or per category and deployment (a category's rows together, in the order of ``summaries``).
    """
    tables = [(summary, summary["per_category"]) for summary in summaries if not summary["per_category"].empty]
    if not tables:
        return []
    several_runs = any(bool((table["runs"] > 1).any()) for _, table in tables)
    header = ["category", *([DEPLOYMENT_COLUMN] if deployments else []), *(["runs"] if several_runs else [])]
    header += [*metrics, TIME_HEADER, THROUGHPUT_HEADER, memory]
    categories = list(dict.fromkeys(category for _, table in tables for category in table["category"]))
    rows = []
    for category in categories:
        for summary, table in tables:
            entry: PublishedEntry | None = summary["published"]
            for record in table[table["category"] == category].to_dict("records"):
                paper_values = entry.per_category.get(category, {}) if entry is not None else {}
                cells = [category, *([summary[DEPLOYMENT_COLUMN]] if deployments else [])]
                cells += [str(record["runs"])] if several_runs else []
                cells += [_cell(_percent(record.get(name)), paper_values.get(name), decimals) for name in metrics]
                cells.append(_cell(_milliseconds(record.get(TIME_COLUMN)), None, 1))
                cells += [_format(record.get(THROUGHPUT_COLUMN), 1), _format(record.get(MEMORY_COLUMN), 0)]
                rows.append(cells)
    return ["", f"{_setting(summaries[0]['k_shot'])}, per category:", "", *_table(header, rows)]


def build_markdown(
    frame: pd.DataFrame,
    published: Published,
    *,
    title: str,
    csv_name: str,
    config_name: str | None = None,
    image_name: str | None = None,
) -> str:
    """The results page as markdown.

    Args:
        frame: :func:`load_results` rows.
        published: :func:`load_published` numbers (may be empty).
        title: The page title.
        csv_name: How the page names its CSV.
        config_name: How the page names the configuration (``None``: none was read).
        image_name: File name of the heat map, linked from the page (``None``: no image).

    Returns:
        The page.
    """
    decimals = published.decimals
    metrics = _present_metrics(frame, published)
    n_failed = int(frame["failed"].sum())
    deployments = shows_deployments(frame)
    lines = [f"# {title}", ""]
    rows_text = "rows, one per job and deployment" if deployments else "jobs"
    source = f"`{csv_name}` ({len(frame)} {rows_text}, {n_failed} failed)"
    if config_name:
        source += f" and `{config_name}`"
    lines.append(
        f"Generated by `anomalib-clipad results` from {source}; regenerate it rather than editing it. Metrics in % "
        f"(the CSV's values x 100, {decimals} decimal{'s' if decimals != 1 else ''}), time per image in ms (the "
        "CSV's `seconds_per_image` x 1000: test batches, pre-processing and forward pass, on the run's machine), "
        "images per second (`images_per_second`: test images / wall time of the whole test run, calibration "
        "included) and the job's peak memory in MiB (`peak_memory_MiB`: CUDA memory allocated on a GPU, the "
        "increase of the process's peak resident set size on a CPU; model and datamodule built, fit and test)."
    )
    if deployments:
        lines += [
            "",
            "Deployments (`anomalib-clipad benchmark --deploy`): `torch f32` rows are the job's model tested by "
            "anomalib's `Engine`; an `openvino <precision>` row is the same fitted and calibrated model exported to an "
            "OpenVINO IR at that precision and run on the CPU, scored on the same test images with the same metrics. "
            "Its time per image is the IR's inference calls (the pre-processing is in the graph), its images per "
            "second the test images / wall time of scoring them (no calibration: it is baked into the IR), and its "
            "peak memory what compiling the IR and scoring added to the process (RSS; the export is not counted).",
        ]
    if published.entries:
        paper = published.paper or "the paper"
        source_text = f" ({published.source})" if published.source else ""
        lines += [
            "",
            f"Published numbers: {paper}{source_text}. A cell `ours (paper P, Δ D)` gives D = ours - P in points "
            "(of the rounded numbers).",
        ]
    if image_name:
        lines += ["", f"![our means per model, setting and metric]({image_name})"]
    summaries = summarise(frame, published)
    memory = memory_header(frame)
    for dataset, model in _group_order(frame, published):
        groups = [summary for summary in summaries if (summary["dataset"], summary["model"]) == (dataset, model)]
        lines += ["", f"## {dataset}: {model}", ""]
        lines += _means_section(groups, metrics, decimals, memory, deployments=deployments)
        for k_shot in dict.fromkeys(summary["k_shot"] for summary in groups):
            same_setting = [summary for summary in groups if summary["k_shot"] == k_shot]
            lines += _categories_section(same_setting, metrics, decimals, memory, deployments=deployments)
    failed = frame[frame["failed"]]
    if len(failed):
        lines += ["", "## Failed jobs", ""]
        rows = [
            [row["dataset"], row["model"], _setting(None if pd.isna(row["k_shot"]) else int(row["k_shot"])),
             row["category"], *([row[DEPLOYMENT_COLUMN]] if deployments else []), str(row["error"])[:300]]
            for row in failed.to_dict("records")
        ]  # fmt: skip
        header = ["dataset", "model", "setting", "category", *([DEPLOYMENT_COLUMN] if deployments else []), "error"]
        lines += _table(header, rows)
    return "\n".join(lines) + "\n"


def plot_heat_map(frame: pd.DataFrame, published: Published, path: str | Path) -> Path:
    """Write a heat map of our means (rows: dataset, model and setting; columns: metrics) to a PNG.

    Cells show our mean in % and, where published, the difference to the paper below it.

    Args:
        frame: :func:`load_results` rows.
        published: :func:`load_published` numbers (may be empty).
        path: The PNG to write.

    Returns:
        ``path``.
    """
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = _present_metrics(frame, published)
    summaries = [summary for summary in summarise(frame, published) if summary["n_ok"]]
    deployments = shows_deployments(frame)
    labels = [
        f"{s['dataset']} · {s['model']} {_setting(s['k_shot'])}{f' · {s[DEPLOYMENT_COLUMN]}' if deployments else ''}"
        for s in summaries
    ]
    values = np.full((max(len(summaries), 1), max(len(metrics), 1)), np.nan)
    for row, summary in enumerate(summaries):
        for column, name in enumerate(metrics):
            value = summary["mean"].get(name)
            values[row, column] = np.nan if value is None else value
    height = 1.2 + 0.45 * values.shape[0]
    width = 2.5 + 1.25 * values.shape[1]
    figure, axes = plt.subplots(figsize=(width, height), dpi=100)
    image = axes.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0.0, vmax=100.0, aspect="auto")
    axes.set_xticks(range(len(metrics)), metrics, rotation=30, ha="right", fontsize=8)
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    decimals = published.decimals
    for row, summary in enumerate(summaries):
        entry: PublishedEntry | None = summary["published"]
        for column, name in enumerate(metrics):
            value = values[row, column]
            if np.isnan(value):
                continue
            text = f"{value:.{decimals}f}"
            if entry is not None and name in entry.mean:
                text += f"\nΔ {round(value, decimals) - round(entry.mean[name], decimals):+.{decimals}f}"
            axes.text(column, row, text, ha="center", va="center", fontsize=7, color="white" if value < 60 else "k")
    axes.set_title("Our mean over categories (%); Δ = ours - paper", fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.04, pad=0.02)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def find_config(csv_path: str | Path) -> Path | None:
    """The configuration copy ``anomalib-clipad benchmark`` wrote beside a CSV (the only ``*.yaml`` there)."""
    candidates = sorted(Path(csv_path).parent.glob("*.yaml"))
    return candidates[0] if len(candidates) == 1 else None


def write_results_page(
    csv_path: str | Path,
    config_path: str | Path | None = None,
    out_dir: str | Path = Path("docs") / "results",
    name: str | None = None,
) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.md`` and ``<out_dir>/<name>.png`` for a benchmark run.

    Args:
        csv_path: ``results.csv`` of ``anomalib-clipad benchmark``.
        config_path: The benchmark configuration (for its ``published`` section); default: the copy beside the
            CSV (:func:`find_config`), if any.
        out_dir: Output folder (created).
        name: File name stem; default: the configuration's stem, else ``results``.

    Returns:
        The markdown and PNG paths.

    Raises:
        FileNotFoundError: If the CSV or the given configuration does not exist.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        msg = f"Results file {csv_path} does not exist."
        raise FileNotFoundError(msg)
    if config_path is None:
        config_path = find_config(csv_path)
    elif not Path(config_path).is_file():
        msg = f"Benchmark configuration {config_path} does not exist."
        raise FileNotFoundError(msg)
    config = None if config_path is None else yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
    published = load_published(config if isinstance(config, dict) else None)
    frame = load_results(csv_path)
    name = name or (Path(config_path).stem if config_path is not None else "results")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    image_path = plot_heat_map(frame, published, out_dir / f"{name}.png")
    markdown = build_markdown(
        frame,
        published,
        title=f"Benchmark results: {name}",
        csv_name=str(csv_path),
        config_name=None if config_path is None else str(config_path),
        image_name=image_path.name,
    )
    markdown_path = out_dir / f"{name}.md"
    markdown_path.write_text(markdown, encoding="utf-8")
    return markdown_path, image_path
