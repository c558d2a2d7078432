# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Execute notebooks/quickstart.ipynb end to end with nbclient (tiny random-init backbones, generated data).

The notebook tours the whole plug-in: WinCLIP zero-shot, PromptAD and DevPrompt few-shot, AnomalyCLIP and SimCLIP
learned on an auxiliary category and used zero-shot from their prompts files, PatchCore beside them in one table, the
maps side by side, and an OpenVINO export run with anomalib's OpenVINOInferencer.
"""

import re
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"
MODELS = ("PatchCore", "WinCLIP", "PromptAD", "DevPrompt", "AnomalyCLIP", "SimCLIP")


def test_quickstart_notebook_runs(tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError with the failing cell's traceback

    outputs = "\n".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    assert "MEANINGLESS" in outputs
    table = outputs[outputs.index("image_AUROC") :]
    for model in MODELS:  # one row per model in the metrics table
        assert re.search(rf"^{model}.*\d\.\d{{3}}", table, flags=re.MULTILINE), model
    for model in ("AnomalyCLIP", "SimCLIP"):
        assert f"{model}: learned parameters in" in outputs
    difference = float(re.search(r"difference to torch ([0-9.e+-]+)", outputs).group(1))
    assert difference < 1e-4  # the OpenVINO IR scores as the torch model does
    assert any(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert (tmp_path / "datasets" / "tour" / "bottle" / "ground_truth").is_dir()
