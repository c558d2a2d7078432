# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""``anomalib-clipad``: the few things anomalib's own CLI cannot do.

* ``anomalib-clipad demo``: generate a small synthetic MVTec-layout dataset and run zero-shot WinCLIP and 1-shot
  WinCLIP+ on it through anomalib's ``Engine`` (metrics printed, anomalib's visualisations written).
* ``anomalib-clipad benchmark --config cfg.yaml [--deploy openvino:int8 ...]``: anomalib's benchmark pipeline with its
  zero-/few-shot and class-path bugs fixed (:mod:`anomalib_clipad.benchmarks.pipeline`); ``--deploy`` adds rows of
  the models exported to OpenVINO at a precision beside the torch rows (:mod:`anomalib_clipad.benchmarks.deploy`).
* ``anomalib-clipad results --csv runs/benchmark/<timestamp>/results.csv``: the results page of a benchmark run (ours
  beside the papers' numbers, markdown and a PNG heat map; :mod:`anomalib_clipad.benchmarks.results_page`).
* ``anomalib-clipad generate-data``: write the synthetic dataset only (e.g. for ``configs/data/synthetic_folder.yaml``).

Training and testing of every model go through anomalib's CLI: ``anomalib test --model WinCLIPPlus ...``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

RANDOM_WEIGHTS_BANNER = """
################################################################################
#  --random-weights: the CLIP backbone is RANDOMLY INITIALISED.                #
#  Every anomaly score and metric below is MEANINGLESS. This run only shows    #
#  that the pipeline works end to end (dataset -> model -> Engine -> metrics). #
################################################################################
"""

_DEFAULT_CATEGORY = {"object": "bottle", "texture": "carpet"}
_METRICS = ("image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_F1Score")


def _deployment_name(text: str) -> str:
    """``--deploy``'s type: the canonical deployment name (``openvino:int8_ptq``), or argparse's error."""
    from anomalib_clipad.benchmarks.deploy import parse_deployment

    try:
        return parse_deployment(text).name
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anomalib-clipad",
        description="CLIP-based anomaly detection models for anomalib: demo, benchmark, results page, synthetic data.",
        epilog="Models are trained/tested with anomalib's own CLI, e.g. `anomalib test --model WinCLIPPlus ...`.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)

    demo = subparsers.add_parser(
        "demo",
        help="zero-shot WinCLIP and 1-shot WinCLIP+ on a generated synthetic dataset",
        description=(
            "Generate a small synthetic MVTec-AD-layout dataset (if missing) and run zero-shot WinCLIP and 1-shot "
            "WinCLIP+ through anomalib's Engine, printing image/pixel metrics and writing anomalib's visualisations. "
            "Needs pretrained CLIP weights (open_clip tag, downloaded, or a local file via --pretrained) unless "
            "--random-weights is given."
        ),
    )
    demo.add_argument("--root", type=Path, default=Path("datasets/clipad_demo"), help="dataset root (created)")
    demo.add_argument("--results", type=Path, default=Path("results/clipad_demo"), help="Engine output folder")
    demo.add_argument("--kind", choices=("object", "texture"), default="object", help="synthetic image kind")
    demo.add_argument("--category", default=None, help="category name (default: bottle / carpet by --kind)")
    demo.add_argument("--random-weights", action="store_true", help="random-init CLIP (meaningless scores, fast)")
    demo.add_argument("--backbone", default=None, help="open_clip architecture (default: the model's / tiny)")
    demo.add_argument("--pretrained", default=None, help="open_clip pretrained tag or local weight file")
    demo.add_argument("--image-size", type=int, default=None, help="model input size (default: the model's, 240)")
    demo.add_argument("--shots", type=int, nargs="+", default=[0, 1], help="k_shot values to run (default: 0 1)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the dataset and of the shot selection")

    benchmark = subparsers.add_parser(
        "benchmark",
        help="anomalib's benchmark pipeline, fixed for zero-/few-shot models and plugin class paths",
        description=(
            "Run the benchmark described by an anomalib benchmark YAML (grid over models/data). Zero-/few-shot "
            "models work, any class path resolves, mixed configurations are collected into one CSV "
            "(runs/benchmark/<timestamp>/results.csv). Exit code 1 if any job failed."
        ),
    )
    benchmark.add_argument("--config", type=Path, required=True, help="benchmark YAML file")
    benchmark.add_argument(
        "--deploy",
        nargs="+",
        action="extend",
        type=_deployment_name,
        default=None,
        metavar="DEPLOYMENT",
        help=(
            "also score each job's model exported to OpenVINO, one row per deployment beside the torch row: "
            "openvino:<precision>, <precision> one of f32, bf16, fp16, int8, int8_ptq, int8_acq (e.g. --deploy "
            "openvino:f32 openvino:int8); replaces the configuration's top-level `deploy` list"
        ),
    )

    results = subparsers.add_parser(
        "results",
        help="results page of a benchmark run: markdown tables (ours beside the papers') and a PNG heat map",
        description=(
            "Write <out>/<name>.md (a table per model and dataset: our metrics beside the numbers in the benchmark "
            "configuration's `published` section, with the difference) and <out>/<name>.png (heat map of our means) "
            "from the results.csv of `anomalib-clipad benchmark`."
        ),
    )
    results.add_argument("--csv", type=Path, required=True, help="results.csv of `anomalib-clipad benchmark`")
    results.add_argument(
        "--config", type=Path, default=None, help="benchmark YAML with `published` (default: the copy beside the CSV)"
    )
    results.add_argument("--out", type=Path, default=Path("docs/results"), help="output folder (default docs/results)")
    results.add_argument("--name", default=None, help="file name stem (default: the configuration's)")

    generate = subparsers.add_parser("generate-data", help="write the synthetic MVTec-layout dataset only")
    generate.add_argument("--root", type=Path, default=Path("datasets/clipad_synthetic"))
    generate.add_argument("--category", default="bottle")
    generate.add_argument("--kind", choices=("object", "texture"), default="object")
    generate.add_argument("--n-train", type=int, default=8)
    generate.add_argument("--n-test-good", type=int, default=6)
    generate.add_argument("--n-test-defect", type=int, default=2, help="per defect type")
    generate.add_argument("--image-size", type=int, default=128)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--overwrite", action="store_true")
    return parser


def _format_metrics(results: list[dict[str, float]]) -> str:
    values = results[0] if results else {}
    return "  ".join(f"{name}={float(values[name]):.3f}" for name in _METRICS if name in values)


def _demo_model_kwargs(args: argparse.Namespace, tiny_backbone: str) -> dict:
    """WinCLIPPlus keyword arguments from the demo's options (the model's own defaults where not given)."""
    kwargs: dict = {}
    if args.random_weights:
        kwargs.update(backbone=args.backbone or tiny_backbone, pretrained=None)
    else:
        if args.backbone is not None:
            kwargs["backbone"] = args.backbone
        if args.pretrained is not None:
            kwargs["pretrained"] = args.pretrained
    if args.image_size is not None:
        kwargs["image_size"] = args.image_size
    return kwargs


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo (see the ``demo`` sub-command's help).

    Args:
        args: Parsed command-line arguments.

    Returns:
        Exit code: 0 on success, 2 when pretrained weights cannot be obtained.
    """
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine

    from anomalib_clipad.clip import TINY_BACKBONE, PretrainedWeightsError, UnknownBackboneError
    from anomalib_clipad.data.synthetic import generate_synthetic_dataset
    from anomalib_clipad.models.winclip_plus import WinCLIPPlus

    category = args.category or _DEFAULT_CATEGORY[args.kind]
    if args.random_weights and args.pretrained is not None:
        print("error: --random-weights and --pretrained exclude each other.", file=sys.stderr)
        return 2
    if args.random_weights:
        print(RANDOM_WEIGHTS_BANNER, flush=True)
    model_kwargs = _demo_model_kwargs(args, TINY_BACKBONE)

    folder = args.root / category
    if folder.is_dir() and any(folder.iterdir()):
        print(f"Using the existing dataset {folder}")
    else:
        generate_synthetic_dataset(
            args.root, category, kind=args.kind, n_train=8, n_test_good=8, n_test_defect=4, image_size=128,
            seed=args.seed,
        )  # fmt: skip
        print(f"Generated a synthetic {args.kind} dataset (MVTec AD layout) in {folder}")

    summary = []
    for k_shot in args.shots:
        name = "WinCLIP (zero-shot)" if k_shot == 0 else f"WinCLIP+ ({k_shot}-shot)"
        print(f"\n=== {name} ===", flush=True)
        try:
            model = WinCLIPPlus(k_shot=k_shot, seed=args.seed, **model_kwargs)
            model.configure_model()  # load the weights now: a missing download stops the demo before it runs
        except PretrainedWeightsError as error:
            print(f"\nerror: {error.message('--pretrained', mention_checkpoint=False)}", file=sys.stderr)
            local_file = "" if error.advice else "pass a local weight file with --pretrained PATH, or "
            print(
                f"hint: {local_file or 'or '}run with --random-weights to check the pipeline (meaningless scores).",
                file=sys.stderr,
            )
            return 2
        except UnknownBackboneError as error:
            print(f"\nerror: {error}", file=sys.stderr)
            return 2
        # Thresholds and normalisation are calibrated on a validation half of the test folder, disjoint from the
        # images the metrics are computed on (MVTecAD's default, `same_as_test`, would calibrate on the test images).
        datamodule = MVTecAD(
            root=args.root,
            category=category,
            num_workers=0,
            train_batch_size=8,
            eval_batch_size=8,
            val_split_mode="from_test",
            val_split_ratio=0.5,
            seed=args.seed,
        )
        # One folder per run: Engine.test writes to <root>/<Model>/<dataset>/<category>/latest (not versioned).
        run_dir = args.results / ("zero_shot" if k_shot == 0 else f"{k_shot}_shot")
        engine = Engine(default_root_dir=run_dir, devices=1)
        results = engine.test(model=model, datamodule=datamodule)
        output_dir = Path(engine.trainer.default_root_dir).resolve()  # 'latest' -> v<N>
        summary.append((name, _format_metrics(results), output_dir))
        print(f"{name}: {_format_metrics(results)}")
        print(f"visualisations and checkpoint: {output_dir}")

    print("\n=== summary ===")
    if args.random_weights:
        print("(random weights: the metrics are MEANINGLESS)")
    for name, metrics, output_dir in summary:
        print(f"{name:<22} {metrics}   [{output_dir / 'images'}]")
    return 0


def run_benchmark_command(args: argparse.Namespace) -> int:
    """Run ``anomalib-clipad benchmark``.

    Args:
        args: Parsed command-line arguments.

    Returns:
        Exit code: 0 if every job succeeded, 1 otherwise, 2 for a bad configuration file.
    """
    from anomalib_clipad.benchmarks.pipeline import run_benchmark

    try:
        ok = run_benchmark(args.config, deploy=args.deploy)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0 if ok else 1


def run_results_command(args: argparse.Namespace) -> int:
    """Run ``anomalib-clipad results``.

    Args:
        args: Parsed command-line arguments.

    Returns:
        Exit code: 0 when the page was written, 2 for a missing or malformed input.
    """
    from anomalib_clipad.benchmarks.results_page import write_results_page

    try:
        markdown, image = write_results_page(args.csv, args.config, args.out, args.name)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Wrote {markdown} and {image}")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    """Run ``anomalib-clipad generate-data``.

    Args:
        args: Parsed command-line arguments.

    Returns:
        Exit code 0, or 2 when the folder exists (without ``--overwrite``) or an argument is invalid.
    """
    from anomalib_clipad.data.synthetic import generate_synthetic_dataset

    try:
        folder = generate_synthetic_dataset(
            args.root, args.category, kind=args.kind, n_train=args.n_train, n_test_good=args.n_test_good,
            n_test_defect=args.n_test_defect, image_size=args.image_size, seed=args.seed, overwrite=args.overwrite,
        )  # fmt: skip
    except (ValueError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Wrote {sum(1 for _ in folder.rglob('*.png'))} files to {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``anomalib-clipad`` console script.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    args = _build_parser().parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    if args.command == "demo":
        return run_demo(args)
    if args.command == "benchmark":
        return run_benchmark_command(args)
    if args.command == "results":
        return run_results_command(args)
    return run_generate(args)


if __name__ == "__main__":
    sys.exit(main())
