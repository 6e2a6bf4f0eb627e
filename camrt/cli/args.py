"""The argument groups the subcommands share (method and options, target, backend, output, run) and the one
reading of each, so a flag means the same in every command."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from camrt.errors import BundleError, CamrtError, InputError, one_line
from camrt.runtime.backends import BACKEND_NAMES, precisions, runner_options
from camrt.runtime.bundle import Bundle
from camrt.runtime.classes import class_index, did_you_mean
from camrt.runtime.dataset import label_index
from camrt.runtime.engine.window import check_batch_size
from camrt.runtime.methods import METHODS
from camrt.runtime.metrics.confidence import DEFAULT_VARIANTS
from camrt.runtime.preprocess import BACKGROUND, parse_background

TARGETS = ("predicted", "label")


class UsageError(Exception):
    """An argparse error, raised instead of printed so ``main`` reports it on one line."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are exceptions naming the command's --help."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def add_command(subparsers: Any, name: str, parents: list[argparse.ArgumentParser], help: str,
                doc: str | None = None, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand's parser, its description the first line of ``doc`` (after ``: ``), with the BUNDLE argument."""
    description = doc.splitlines()[0].split(": ", 1)[-1].replace("``", "") if doc else None
    parser = subparsers.add_parser(name, parents=parents, help=help, description=description, **kwargs)
    parser.add_argument("bundle", metavar="BUNDLE", type=Path, help="a bundle folder (from camrt export)")
    return parser


# ------------------------------------------------------------------------------------------ value types
def positive_int(text: str) -> int:
    """An argparse type: an integer of 1 or more."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def background(text: str) -> tuple[int, int, int]:
    """An argparse type: the colour transparent pixels are composited on (a name, #rrggbb or R,G,B)."""
    try:
        return parse_background(text.split(",") if "," in text else text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("background: ")) from None


def batch_size(text: str) -> int:
    """An argparse type: a batch size in [1, MAX_BATCH] (``engine.window.check_batch_size``)."""
    try:
        return check_batch_size(positive_int(text))
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None


def count(text: str) -> int:
    """An argparse type: an integer of 0 or more."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text!r}")
    return value


# ------------------------------------------------------------------------------------------ method and options
def add_method_arguments(parser: argparse.ArgumentParser, several: bool = False) -> None:
    """--method/-m and --convention/-c (or --methods/-m METHOD[:CONVENTION],...), and -O/--option."""
    if several:
        parser.add_argument("--methods", "-m", default="scorecam,scorecam++",
                            help="comma-separated METHOD[:CONVENTION] (default: scorecam,scorecam++)")
    else:
        parser.add_argument("--method", "-m", choices=list(METHODS), default="scorecam", help="default: scorecam")
        parser.add_argument("--convention", "-c", default="paper",
                            help="whose implementation to match exactly (default: paper)")
    parser.add_argument("--option", "-O", action="append", default=[], metavar="[METHOD.]KEY=VALUE",
                        help="a method option, e.g. num_samples=10 or iscam.num_samples=5 (repeatable)")


def option_value(text: str) -> Any:
    """An option's value: an int, else a float, else the string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_options(items: Sequence[str], method: str | None = None) -> dict[str, Any]:
    """``[METHOD.]KEY=VALUE`` strings as options; with ``method`` (single-method commands) a prefix must name it
    and is dropped, without it keys keep their prefix (``parse_methods`` scopes them)."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        prefix, dot, name = key.rpartition(".")
        if not sep or not name:
            raise InputError(f"--option: expected [METHOD.]KEY=VALUE, got {item!r}")
        if dot and method is not None:
            if prefix != method:
                raise InputError(f"--option {item}: {prefix!r} is not the method of this run ({method})")
            key = name
        options[key] = option_value(value.strip())
    return options


# ------------------------------------------------------------------------------------------ target
def add_target_argument(parser: argparse.ArgumentParser) -> None:
    """--target/-t predicted|label|CLASS."""
    parser.add_argument("--target", "-t", default="predicted", metavar="predicted|label|CLASS",
                        help="the class to explain: each image's predicted class (default), its label (the "
                             "ImageFolder subfolder or CSV label), or one class index or name")


def resolve_target(value: str, bundle: Bundle) -> str | int:
    """--target as ``predicted``, ``label`` or a class index in range (an integer, or a class name or synonym)."""
    if value in TARGETS:
        return value
    return class_index(value, bundle.manifest.class_names, bundle.manifest.num_classes, "--target")


def image_target(target: str | int, label: str | None, bundle: Bundle, path: Path) -> int | None:
    """One image's class under a resolved --target: None (predicted), its label's index, or the fixed class."""
    if target == "predicted":
        return None
    if target != "label":
        return int(target)
    if label is None:
        raise InputError(f"{path}: no label (--target label needs an ImageFolder subfolder or a CSV label)")
    index = label_index(label, bundle)
    if index is None:
        raise InputError(f"{path}: label {label!r} is not a class of this bundle"
                         f"{did_you_mean(label, bundle.manifest.class_names or [])}")
    return index


# ------------------------------------------------------------------------------------------ backend
def add_metric_arguments(parser: argparse.ArgumentParser, optional: bool) -> None:
    """--confidence, --causal and --step (evaluate; explain-dataset, where --metrics turns them on)."""
    when = "with --metrics: " if optional else ""
    if optional:
        parser.add_argument("--metrics", action="store_true",
                            help="also score each map (Average Drop, Increase in Confidence, deletion/insertion AUC)")
    parser.add_argument("--confidence", default=None, metavar="VARIANTS",
                        help=f"{when}Average Drop / Increase in Confidence variants: prob-full, prob-topP, logit-full, "
                             f"logit-topP, or none (default: {','.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--causal", default=None, metavar="VARIANTS",
                        help=f"{when}deletion/insertion variants: rise, torchcam, or none (default: rise)")
    parser.add_argument("--step", type=positive_int, default=None, metavar="PIXELS",
                        help="RISE pixels per step (default: H*W/28, 1792 at 224x224)")


def metric_variants(args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(confidence, causal) variant names as given, each once; none where a list says ``none``, and none at all
    when the command has --metrics, it is off and no list asks for one."""
    if not (getattr(args, "metrics", True) or args.confidence or args.causal):
        return (), ()

    def names(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
        chosen = default if text is None else tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
        return () if chosen == ("none",) else chosen

    return names(args.confidence, tuple(DEFAULT_VARIANTS)), names(args.causal, ("rise",))


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """--backend, --device, --precision and --threads."""
    parser.add_argument("--backend", choices=BACKEND_NAMES, default="onnxruntime", help="default: onnxruntime")
    parser.add_argument("--device", default=None, metavar="DEV",
                        help="cpu, cuda or cuda:N (default: cpu; cuda for the GPU-only backends)")
    parser.add_argument("--precision", choices=precisions(), default="fp32",
                        help="engine precision (default: fp32): fp16 on the GPU backends, bf16 on torch's GPU, "
                             "bf16/fp16/int8 on --backend openvino (CPU), int8 on onnxruntime (CPU); int8 after "
                             "camrt calibrate [--engine onnxruntime]")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="T", help="CPU threads of the backend")
    parser.add_argument("--trust-bundle", action="store_true",
                        help="--backend torch: load the bundle's torch.export programs, whose pickles can run code; "
                             "only for bundles you trust as you trust code")


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """--device, --precision, --threads and --trust-bundle as the chosen backend's keyword arguments."""
    options = runner_options(args.backend, args.device, args.precision, args.threads)
    if getattr(args, "trust_bundle", False):
        if args.backend != "torch":
            raise InputError(f"--trust-bundle: only backend torch loads pickles; {args.backend} needs no trust")
        options["trust_pickles"] = True
    return options


def make_explainer(args: argparse.Namespace) -> Any:
    """The Explainer for BUNDLE on --backend; a missing GPU, driver or package names the flag that asked for it."""
    from camrt.runtime.explainer import Explainer

    options = backend_options(args)
    try:
        explainer = Explainer(args.bundle, backend=args.backend, **options)
    except (BundleError, InputError):
        raise
    except CamrtError as exc:
        raise CamrtError(f"--backend {args.backend}: {exc}") from None
    warn_random_weights(explainer.bundle)
    return explainer


def warn_random_weights(bundle: Bundle) -> None:
    """The one-line warning for a bundle exported with --random-weights, whose maps explain no trained model."""
    if bundle.manifest.random_weights:
        warn(f"{bundle.root}: exported with --random-weights; its predictions and maps explain an untrained model")


# ------------------------------------------------------------------------------------------ output, run, progress
def add_output_arguments(parser: argparse.ArgumentParser, what: str, resume: str | None = None) -> None:
    """--out/-o (``what`` says what goes there), --resume when the command can (``resume``: its help), --limit."""
    parser.add_argument("--out", "-o", required=True, type=Path, help=f"the folder to write {what} to")
    if resume is not None:
        parser.add_argument("--resume", action="store_true", help=resume)
        parser.add_argument("--allow-new", action="store_true",
                            help="with --resume: take on images added to DATA after the others (nothing renumbered)")
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N", help="only the first N images")


def add_run_arguments(parser: argparse.ArgumentParser, batch: str = "masked inputs per forward pass") -> None:
    """--batch-size/-b, --seed, --quiet/-q and --background."""
    parser.add_argument("--batch-size", "-b", type=batch_size, default=64, metavar="N",
                        help=f"{batch} (default: 64)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="noise seed for sscam (default: 0)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.add_argument("--background", type=background, default=BACKGROUND, metavar="COLOUR",
                        help="what transparent pixels are composited on: a name, #rrggbb or R,G,B (default: white)")


def add_shared_arguments(parser: argparse.ArgumentParser, what: str, resume: str | None = None,
                         several: bool = False, batch: str = "masked inputs per forward pass") -> None:
    """The groups every command over images shares: method and options, target, output, backend, run."""
    add_method_arguments(parser, several)
    add_target_argument(parser)
    add_output_arguments(parser, what, resume)
    add_backend_arguments(parser)
    add_run_arguments(parser, batch)


def progress_bar(total: int, quiet: bool) -> Any:
    """tqdm over the images on stderr (off with --quiet, or when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="image", file=sys.stderr, disable=True if quiet else None, dynamic_ncols=True)


def passes_postfix(bar: Any, path: Path, every: float = 0.1) -> Callable[[int, int], None]:
    """A progress callback showing the passes done on this image in the bar, redrawn at most every 0.1 s."""
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= every:
            last[0] = now
            bar.set_postfix_str(f"{path.name}: {done}/{total} passes", refresh=True)

    return progress


def image_error(path: Path, exc: BaseException | str) -> str:
    """A bad image's one-line message, starting with its path."""
    message = exc if isinstance(exc, str) else one_line(exc)
    return message if message.startswith(str(path)) else f"{path}: {message}"


def warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"camrt: warning: {message}", file=sys.stderr)
