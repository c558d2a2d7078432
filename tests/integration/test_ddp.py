# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""Two-process DDP on CPU (gloo): training on auxiliary data scales out, and both processes end equal.

``--trainer.accelerator gpu --trainer.devices N --trainer.strategy ddp`` is how users scale AnomalyCLIP's training;
Lightning's DDP launcher re-runs the script once per extra process, shards the batches (DistributedSampler) and
averages the gradients, so every process must end with the same learned prompts. The script runs in a subprocess
(the launcher re-executes ``sys.argv``, which must be a script, not pytest). It trains on conftest's
``auxiliary_root``.
"""

from __future__ import annotations

import socket
import sys
import textwrap
from pathlib import Path

import torch
from cli_runner import run_command

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch
    from anomalib.engine import Engine
    from lightning.pytorch import Callback

    from anomalib_clipad.data import AuxiliaryData
    from anomalib_clipad.registry import get_spec

    work, root = Path(sys.argv[1]), Path(sys.argv[2])


    class FirstEpochImages(Callback):  # the images the model knows after one epoch (each process fitted its shard)
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 0:
                paths = "\\n".join(sorted(pl_module.training_paths))
                (work / f"rank{trainer.global_rank}.paths").write_text(paths)


    torch.manual_seed(0)  # the same random CLIP in both processes (the checkpoint would hold it otherwise)
    model = get_spec("AnomalyCLIP").build_tiny(epochs=2, seed=3)
    datamodule = AuxiliaryData(dataset="MVTecAD", root=root, num_workers=0, train_batch_size=2, seed=0)
    engine = Engine(
        default_root_dir=work / "results", accelerator="cpu", devices=2, strategy="ddp", logger=False,
        enable_progress_bar=False, callbacks=[FirstEpochImages()],
    )
    engine.fit(model, datamodule=datamodule)
    rank = engine.trainer.global_rank
    state = {name: tensor.clone() for name, tensor in model.model.learned_state_dict().items()}
    state["world_size"] = torch.tensor(engine.trainer.world_size)
    state["steps"] = torch.tensor(engine.trainer.global_step)
    state["images_encoded"] = torch.tensor(model.recipe.cache.computed_images)
    torch.save(state, work / f"rank{rank}.pt")
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_ddp_ends_with_equal_parameters(auxiliary_root: Path, tmp_path: Path) -> None:
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    run_command(
        [sys.executable, str(script), str(tmp_path), str(auxiliary_root)],
        cwd=tmp_path,
        env={"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())},
    )
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert int(ranks[0]["world_size"]) == 2
    # 4 labelled images (1 good, 3 defects), batch 2 per process: one step per epoch in each process
    assert int(ranks[0]["steps"]) == int(ranks[1]["steps"]) == 2
    # each process encodes its shard (2 images an epoch, reshuffled every epoch), never an image twice
    for state in ranks:
        assert 2 <= int(state["images_encoded"]) <= 4
    # after one epoch, every process knows every training image though it fitted its shard only: the leakage guard
    # and the checkpoint (process 0 writes it) see all of them
    training_images = sorted(str(path) for path in auxiliary_root.rglob("test/*/*.png"))
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.paths").read_text().splitlines() == training_images
    names = [name for name in ranks[0] if name not in {"world_size", "steps", "images_encoded"}]
    assert names
    # exact: DDP hands both processes the same all-reduced gradients, and the same update of the same parameters
    # gives the same bits (this is what keeps replicas equal); a rounding-sized difference would be a desync
    for name in names:
        torch.testing.assert_close(ranks[0][name], ranks[1][name], rtol=0, atol=0, msg=name)
