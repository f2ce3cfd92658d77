"""The ``rnnfc`` command line: parse options, call one library function, render the result.

Heavy libraries (jax, flax, Orbax) are imported only inside commands that need them, so
``--help``, ``--version`` and usage errors answer at once. Every ``RnnfcError`` becomes
one line on stderr and its exit code; anything unexpected becomes one line, the path of a
log holding the traceback, and exit code 1.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import dataclasses
import datetime
import functools
import io
import json
import os
import shlex
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from rnnfc_cli import __version__
from rnnfc_cli.config import (
    CELLS,
    CHECKPOINT_EVERY,
    CLASS_WEIGHTS,
    DEFAULT_PLATFORMS,
    EPOCHS,
    MONITORS,
    NORMALIZATIONS,
    POOLS,
    PRECISIONS,
    PREDICT_BATCH,
    REFIT_BELOW,
    REFITS,
    check_choice,
)
from rnnfc_cli.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    BadInputError,
    GateFailedError,
    RnnfcError,
    TrainingDivergedError,
    TrainingInterruptedError,
)
from rnnfc_cli.settings import RunSettings, read_options

EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 gate failed, training diverged, a save failed (e.g. a full disk), an "
    "optional package is missing, or an internal error; 2 bad input or usage; 130 interrupted. "
    "Machine settings: RNNFC_CACHE_DIR (compiled programs and error logs, default "
    "~/.cache/rnnfc), RNNFC_DEVICES (default for train --devices)."
)

app = typer.Typer(
    name="rnnfc",
    help=f"Train, evaluate and apply RNN sequence classifiers. {EXIT_CODES_HELP}",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# The defaults of ``train``'s run settings (class attributes: nothing is checked or built).
_RUN = RunSettings


def _version_callback(value: bool) -> None:
    if value:
        print(f"rnnfc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_version_callback,
            is_eager=True,
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", help="Show the traceback of an internal error (also: RNNFC_DEBUG=1)."
        ),
    ] = False,
) -> None:
    del version
    if debug:
        os.environ["RNNFC_DEBUG"] = "1"


# --- shared options ------------------------------------------------------------------------


def _panel(title: str):
    """An option factory for one panel of ``--help`` (most used panels first)."""

    def option(*names: str, **kwargs: Any) -> Any:
        return typer.Option(*names, rich_help_panel=title, **kwargs)

    return option


_data_opt = _panel("Data")
_model_opt = _panel("Model")
_training_opt = _panel("Training")
_output_opt = _panel("Output")
_run_opt = _panel("Run / distributed")

# What the label, id and time columns are. train takes them as given ("label", "id",
# "time" by default); eval, predict and report default to the ones the model was trained
# with (None here).
_COLUMN_HELP = {
    "--label-col": "CSV column holding the class label",
    "--id-col": "CSV column whose presence marks long format (one row per step)",
    "--time-col": "Long-CSV column that orders the steps of a sequence, if present",
}


def _column(flag: str, saved: bool) -> Any:
    if saved:
        return Annotated[
            str | None, _data_opt(flag, help=f"{_COLUMN_HELP[flag]} \\[default: the training's].")
        ]
    return Annotated[str, _data_opt(flag, help=f"{_COLUMN_HELP[flag]}.")]


LabelCol, SavedLabelCol = _column("--label-col", False), _column("--label-col", True)
IdCol, SavedIdCol = _column("--id-col", False), _column("--id-col", True)
TimeCol, SavedTimeCol = _column("--time-col", False), _column("--time-col", True)
FeatureCols = Annotated[
    str | None,
    _data_opt(
        "--features",
        help="CSV columns to use as features (wide: as time steps), in this order: names or "
        "glob patterns joined by commas. Default: all but id, time and label; eval and "
        "predict default to the model's.",
    ),
]
IgnoreCols = Annotated[
    str | None,
    _data_opt(
        "--ignore",
        help="CSV columns to leave out: names or glob patterns joined by commas, e.g. "
        "'note,meta_*'.",
    ),
]
ModelDirArg = Annotated[Path, typer.Argument(help="A model directory written by rnnfc train.")]
Quiet = Annotated[bool, _output_opt("--quiet", "-q", help="Print nothing on stderr but errors.")]
Verbose = Annotated[
    bool,
    _output_opt("--verbose", "-v", help="Say more on stderr (train: a line per epoch, too)."),
]
LabelsFile = Annotated[
    str | None,
    _data_opt(
        "--labels", help="Labels for a .npy input: a .npy array or a text file, one per line."
    ),
]


def _command(name: str | None = None) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a command whose ``RnnfcError`` becomes one stderr line and its exit code."""

    def register(command: Callable[..., None]) -> Callable[..., None]:
        label = name or command.__name__

        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            try:
                command(*args, **kwargs)
            except RnnfcError as err:
                print(f"rnnfc {label}: error: {err}", file=sys.stderr)
                raise typer.Exit(err.exit_code) from None

        return app.command(label)(wrapper)

    return register


def _note(command: str, message: str) -> None:
    """One informational line on stderr."""
    print(f"rnnfc {command}: {message}", file=sys.stderr)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


# --- commands ------------------------------------------------------------------------------


def _load_train_config(ctx: typer.Context, path: Path | None) -> Path | None:
    """Read a TOML file into the defaults of ``train``'s options (flags still win)."""
    if path is None:
        return None
    import tomllib

    try:
        settings = tomllib.loads(path.read_text())
    except OSError as err:
        raise BadInputError(f"--config {path}: cannot read ({err.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise BadInputError(f"--config {path}: not valid TOML ({err})") from None
    defaults = RunSettings.named(settings, f"--config {path}")
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return path


@_command()
def train(
    ctx: typer.Context,
    data: Annotated[
        str,
        typer.Argument(
            help="Training data: .csv (wide or long), .npz, .npy, or - for CSV on stdin."
        ),
    ],
    val: Annotated[
        str | None,
        _data_opt("--val", help="Validation data file (else --val-split of DATA is held out)."),
    ] = _RUN.val,
    val_split: Annotated[
        float,
        _data_opt(
            "--val-split", help="Fraction of DATA held out for validation, stratified by class."
        ),
    ] = _RUN.val_split,
    label_col: LabelCol = _RUN.label_col,
    id_col: IdCol = _RUN.id_col,
    time_col: TimeCol = _RUN.time_col,
    labels: LabelsFile = _RUN.labels,
    features: FeatureCols = _RUN.features,
    ignore: IgnoreCols = _RUN.ignore,
    time_features: Annotated[
        bool,
        _data_opt(
            "--time-features/--no-time-features",
            help="Add per step the time since the previous step (log1p), from the long CSV's "
            "time column (numbers or ISO-8601 timestamps).",
        ),
    ] = _RUN.time_features,
    elapsed_time: Annotated[
        bool,
        _data_opt(
            "--elapsed-time",
            help="With --time-features, add the time since the sequence's first step too.",
        ),
    ] = _RUN.elapsed_time,
    categorical: Annotated[
        str | None,
        _data_opt(
            "--categorical",
            help="Long-CSV columns that hold categories (strings or codes), joined by commas: "
            "each gets a learned embedding.",
        ),
    ] = _RUN.categorical,
    tokens: Annotated[
        str | None,
        _data_opt(
            "--tokens",
            help="A CSV column whose every cell is a whole sequence of tokens (one sequence "
            "per row, the label beside it).",
        ),
    ] = _RUN.tokens,
    token_split: Annotated[
        str,
        _data_opt(
            "--token-split",
            help="How a --tokens cell splits: space (on whitespace) or char (DNA, codes).",
        ),
    ] = _RUN.token_split,
    max_vocab: Annotated[
        int,
        _data_opt(
            "--max-vocab", help="Keep at most this many tokens per column, the most frequent."
        ),
    ] = _RUN.max_vocab,
    min_count: Annotated[
        int,
        _data_opt(
            "--min-count",
            help="Keep tokens seen at least this often in training; the rest read as unknown.",
        ),
    ] = _RUN.min_count,
    embed_dim: Annotated[
        str,
        _model_opt(
            "--embed-dim",
            help="Embedding size of every token column; auto: 1.6 * ids^0.56, at most 64.",
        ),
    ] = _RUN.embed_dim,
    normalize: Annotated[
        str,
        _data_opt(
            "--normalize",
            help=f"Input scaling: {'|'.join(NORMALIZATIONS)} (per feature, or per sequence; "
            "+scale also gives the model each sequence's log scale; auto: sequence+scale "
            "when amplitudes span over 100x across sequences).",
        ),
    ] = _RUN.normalize,
    cell: Annotated[
        str, _model_opt("--cell", help=f"Recurrent cell: {'|'.join(CELLS)}.")
    ] = _RUN.cell,
    hidden: Annotated[
        int, _model_opt("--hidden", min=1, max=8192, help="Recurrent state size.")
    ] = _RUN.hidden,
    layers: Annotated[
        int,
        _model_opt(
            "--layers",
            min=0,
            max=16,
            help="Stacked recurrent layers (0: none, the conv front end's skip path alone).",
        ),
    ] = _RUN.layers,
    bidirectional: Annotated[
        bool,
        _model_opt(
            "--bidirectional/--unidirectional",
            help="Add a backward pass over each sequence's valid steps.",
        ),
    ] = _RUN.bidirectional,
    pool: Annotated[
        str,
        _model_opt(
            "--pool",
            help=f"Per-step states to one vector: {'|'.join(POOLS)}, or several (last,mean).",
        ),
    ] = _RUN.pool,
    dense: Annotated[
        str,
        _model_opt(
            "--dense", help="Hidden Dense layer sizes of the head, e.g. 128,64 ('none' for none)."
        ),
    ] = _RUN.dense,
    dropout: Annotated[
        float,
        _model_opt(
            "--dropout", help="Dropout between recurrent layers and in the head, in [0, 1)."
        ),
    ] = _RUN.dropout,
    layer_norm: Annotated[
        bool,
        _model_opt(
            "--layer-norm/--no-layer-norm", help="Layer normalisation after each recurrent layer."
        ),
    ] = _RUN.layer_norm,
    patch: Annotated[
        str,
        _model_opt(
            "--patch",
            help="Fold K steps into one recurrent step ('auto': from the training lengths).",
        ),
    ] = _RUN.patch,
    conv: Annotated[
        str,
        _model_opt(
            "--conv",
            help="Convolutional front end before the recurrent layers: channels:kernel blocks "
            "(conv, batch norm over valid steps, ReLU), or 'none'; auto: 64:8,128:5,64:3, "
            "or 64:3 for a model that reads tokens.",
        ),
    ] = _RUN.conv,
    downsample: Annotated[
        str,
        _model_opt(
            "--downsample",
            help="Pool the conv features over K steps before the recurrent layers (the "
            "maximum; see --block-pool) ('auto': from the training lengths).",
        ),
    ] = _RUN.downsample,
    block_pool: Annotated[
        str,
        _model_opt(
            "--block-pool",
            help="Take N of --downsample's K between conv blocks: average over N steps "
            "after each block but the last while N divides what is left (the rest, "
            "max-pooled, after the last); "
            "1 keeps every block at full resolution; auto: 2 when a training sequence is "
            "over 1024 steps, else 1.",
        ),
    ] = _RUN.block_pool,
    skip: Annotated[
        bool,
        _model_opt(
            "--skip/--no-skip",
            help="Join the conv features' average over valid steps with the recurrent states.",
        ),
    ] = _RUN.skip,
    branch_dropout: Annotated[
        float,
        _model_opt(
            "--branch-dropout",
            help="Share of training examples whose recurrent states are dropped whole "
            "(with the conv skip path), in [0, 1).",
        ),
    ] = _RUN.branch_dropout,
    precision: Annotated[
        str,
        _model_opt(
            "--precision",
            help=f"Matrix-product inputs: {'|'.join(PRECISIONS)} (bf16: float32 parameters and "
            "sums, bfloat16 inputs; faster where the hardware multiplies bf16).",
        ),
    ] = _RUN.precision,
    epochs: Annotated[
        str,
        _training_opt(
            "--epochs",
            help=f"Maximum number of epochs ('auto': {EPOCHS}, or enough for --min-steps "
            "optimizer steps when that is more).",
        ),
    ] = _RUN.epochs,
    batch_size: Annotated[
        int, _training_opt("--batch-size", min=1, max=65536, help="Sequences per optimizer step.")
    ] = _RUN.batch_size,
    lr: Annotated[
        float,
        _training_opt("--lr", help="Peak learning rate of AdamW (linear warm-up, cosine decay)."),
    ] = _RUN.lr,
    weight_decay: Annotated[
        float, _training_opt("--weight-decay", min=0.0, help="AdamW decoupled weight decay.")
    ] = _RUN.weight_decay,
    warmup: Annotated[
        int,
        _training_opt(
            "--warmup", min=0, help="Warm-up optimizer steps (at most a tenth of all steps)."
        ),
    ] = _RUN.warmup,
    clip_norm: Annotated[
        float,
        _training_opt(
            "--clip-norm", min=0.0, help="Clip gradients to this global norm; 0 turns clipping off."
        ),
    ] = _RUN.clip_norm,
    label_smoothing: Annotated[
        float, _training_opt("--label-smoothing", help="Label smoothing, in [0, 1).")
    ] = _RUN.label_smoothing,
    class_weight: Annotated[
        str,
        _training_opt("--class-weight", help=f"Loss weights per class: {'|'.join(CLASS_WEIGHTS)}."),
    ] = _RUN.class_weight,
    monitor: Annotated[
        str,
        _training_opt(
            "--monitor",
            help=f"Validation metric for the best epoch and early stopping: {'|'.join(MONITORS)}.",
        ),
    ] = _RUN.monitor,
    patience: Annotated[
        int,
        _training_opt(
            "--patience", min=1, help="Epochs without progress on --monitor before stopping."
        ),
    ] = _RUN.patience,
    min_steps: Annotated[
        int,
        _training_opt(
            "--min-steps",
            min=0,
            help="Optimizer steps always taken before early stopping (by the refit, when one "
            "follows: the validation run before it stops on --patience alone).",
        ),
    ] = _RUN.min_steps,
    refit: Annotated[
        str,
        _training_opt(
            "--refit",
            help=f"{'|'.join(REFITS)}: after the validation run, train again on all of DATA "
            f"for the epochs it chose (auto: when fewer than {REFIT_BELOW} sequences were held "
            "out; not with --val).",
        ),
    ] = _RUN.refit,
    augment: Annotated[
        str,
        _training_opt(
            "--augment",
            help="Augment every training batch, in this order: jitter[:SD] (noise), "
            "scale[:SD] (a factor per sequence and feature), crop[:SHARE] (a random window), "
            "mixup[:ALPHA] (pairs of sequences and their labels mixed); e.g. crop:0.7. "
            "Default none.",
        ),
    ] = _RUN.augment,
    seed: Annotated[
        int,
        _training_opt(
            "--seed", min=0, help="Seed for initialisation, shuffling, dropout and the split."
        ),
    ] = _RUN.seed,
    seeds: Annotated[
        int,
        _training_opt(
            "--seeds",
            min=1,
            max=64,
            help="Train this many models at once (seeds SEED, SEED+1, ...) as an ensemble.",
        ),
    ] = _RUN.seeds,
    buckets: Annotated[
        bool,
        _training_opt(
            "--buckets/--no-buckets",
            help="Batch sequences of similar length (>= 1024 sequences, >= 30% less padding).",
        ),
    ] = _RUN.buckets,
    model_dir: Annotated[
        Path, _output_opt("--model-dir", "-m", help="Where to write the model directory.")
    ] = Path("model"),
    force: Annotated[
        bool,
        _output_opt(
            "--force", help="Replace MODEL_DIR if it already holds a model; discard a saved run."
        ),
    ] = False,
    resume: Annotated[
        bool,
        _output_opt(
            "--resume",
            help="Continue the interrupted run for MODEL_DIR from its last snapshot, with its "
            "settings (DATA must be the same).",
        ),
    ] = False,
    checkpoint_every: Annotated[
        float,
        _output_opt(
            "--checkpoint-every",
            min=0.0,
            help="Seconds between snapshots of the full train state, for --resume "
            "(taken at epoch ends, or inside long epochs); 0: every epoch.",
        ),
    ] = CHECKPOINT_EVERY,
    json_output: Annotated[
        bool,
        _output_opt("--json", help="Print the training summary as JSON on stdout, not a table."),
    ] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    tensorboard: Annotated[
        Path | None,
        _output_opt(
            "--tensorboard",
            help="Also write each epoch's metrics as TensorBoard scalars into this directory "
            "(pip install 'rnnfc\\[tensorboard]').",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        _output_opt(
            "--config",
            is_eager=True,
            callback=_load_train_config,
            help="TOML file of train options (names as the flags, e.g. hidden = 64); flags "
            "given on the command line win. MODEL_DIR/config.toml holds a run's settings.",
        ),
    ] = None,
    devices: Annotated[
        int,
        _run_opt(
            "--devices",
            min=0,
            envvar="RNNFC_DEVICES",
            help="Split batches over this many local devices (0: as many as divide the batch;"
            " on CPU, one per core, shares of at least 32 rows).",
        ),
    ] = _RUN.devices,
    coordinator: Annotated[
        str | None,
        _run_opt(
            "--coordinator",
            help="HOST:PORT of process 0 in a multi-host run (one process per host; with "
            "--num-processes and --process-id). SLURM, Open MPI and TPU pods are detected.",
        ),
    ] = None,
    num_processes: Annotated[
        int | None, _run_opt("--num-processes", min=1, help="Processes in a multi-host run.")
    ] = None,
    process_id: Annotated[
        int | None, _run_opt("--process-id", min=0, help="This process's rank, 0 to N-1.")
    ] = None,
) -> None:
    """Train a classifier on DATA and save the best epoch (by validation score) to MODEL_DIR."""
    from rnnfc_cli import api, display, staging

    del config
    settings = {name: ctx.params[name] for name in RunSettings.names()}
    if resume and not staging.has_snapshot(model_dir):
        # One command line serves every attempt of a requeued job: the first starts afresh.
        resume = False
        if not quiet:
            kept = staging.staging_dir(model_dir)
            _note("train", f"--resume: nothing saved in {kept} to continue; starting a new run")
    if resume:
        settings = _resume_settings(ctx, model_dir, settings)
    request = _train_request(settings, data, model_dir, force, resume, checkpoint_every)
    distributed = _start_distributed(coordinator, num_processes, process_id)
    if distributed:
        import jax

        speaker = jax.process_index() == 0  # process 0 speaks and logs for the run
        quiet = quiet or not speaker
        tensorboard = tensorboard if speaker else None
    else:
        speaker = True
    with contextlib.ExitStack() as stack:
        progress = stack.enter_context(display.TrainingDisplay(quiet=quiet, verbose=verbose))
        callbacks = progress
        if tensorboard is not None:
            from rnnfc_cli.callbacks import CallbackList
            from rnnfc_cli.tensorboard import TensorBoardLogger

            logger = TensorBoardLogger(tensorboard)
            stack.callback(logger.close)
            callbacks = CallbackList(progress, logger)
        # A graceful stop must be agreed by every process of a multi-process run; there,
        # Ctrl-C ends this process and jax.distributed's health checks end the others.
        stop = None if distributed else stack.enter_context(_stop_on_signals())
        summary = _train_or_explain(api, dataclasses.replace(request, stop=stop), callbacks)
    if speaker and json_output:
        _print_json(summary)
    elif speaker:
        display.render_train_summary(summary)
    if speaker and verbose and not quiet:
        phases = ", ".join(f"{name} {value:.2f}" for name, value in summary["seconds"].items())
        _note("train", f"seconds by phase: {phases}")
    if summary["diverged_at"]:
        where = summary["diverged_at"]
        raise TrainingDivergedError(
            f"the training loss became NaN or infinite at epoch {where['epoch']}, step "
            f"{where['step']}; training stopped and {summary['model_dir']} holds the best "
            f"epoch before it ({summary['best_epoch']}); lower --lr to go further"
        )


def _start_distributed(
    coordinator: str | None, num_processes: int | None, process_id: int | None
) -> bool:
    given = [coordinator is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise BadInputError(
            "--coordinator, --num-processes and --process-id: give all three, or none"
        )
    if all(given):
        if ":" not in coordinator:
            raise BadInputError(f"--coordinator '{coordinator}': expected HOST:PORT")
        if process_id >= num_processes:
            raise BadInputError(
                f"--process-id {process_id}: must be below --num-processes {num_processes}"
            )
    from rnnfc_cli import runtime

    if not runtime.start_distributed(coordinator, num_processes, process_id):
        return False
    _keep_stdout_for_results()
    return True


def _keep_stdout_for_results() -> None:
    """Send what native libraries print on file descriptor 1 to stderr, keeping stdout for
    rnnfc's results: Gloo announces its connections there."""
    sys.stdout.flush()
    results = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(results, "w")


def _train_or_explain(api, request, callbacks) -> dict[str, Any]:
    """Train; an interruption says how to resume and exits 130."""
    try:
        return api.train_model(request, callbacks)
    except TrainingInterruptedError as err:
        command = shlex.join(
            ["rnnfc", "train", request.data, "--model-dir", str(request.model_dir)]
        )
        how = f"; continue it with: {command} --resume" if err.saved else "; nothing was saved"
        print(f"rnnfc train: {err}{how}", file=sys.stderr)
        raise typer.Exit(err.exit_code) from None


def _train_request(
    settings: dict[str, Any],
    data: str,
    model_dir: Path,
    force: bool,
    resume: bool,
    checkpoint_every: float,
):
    """Check the run settings (named as the train command's parameters) and build the
    request; the settings also go to MODEL_DIR/config.toml."""
    from rnnfc_cli import api

    run = RunSettings(**settings)
    return api.TrainRequest.from_settings(
        run,
        data=data,
        model_dir=model_dir,
        force=force,
        resume=resume,
        checkpoint_every=checkpoint_every,
    )


def _resume_settings(
    context: typer.Context, model_dir: Path, given: dict[str, Any]
) -> dict[str, Any]:
    """The interrupted run's settings; a flag given now must agree with them."""
    import tomllib

    from rnnfc_cli.staging import staging_dir

    path = staging_dir(model_dir) / "config.toml"
    try:
        saved = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BadInputError(
            f"{model_dir}: --resume: no interrupted run to continue; train without --resume"
        ) from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise BadInputError(f"{path}: --resume: unreadable saved settings ({err})") from None
    flags = {param.name: param.opts[0] for param in context.command.params}
    settings = {}
    for name, value in given.items():
        source = context.get_parameter_source(name)
        explicit = source is not None and source.name != "DEFAULT"
        if name in RunSettings.RESUME_MAY_CHANGE and explicit:
            settings[name] = value
            continue
        # A setting newer than the saved run takes its default, as the run did.
        settings[name] = saved.get(name, getattr(RunSettings, name))
        if explicit and value != settings[name]:
            raise BadInputError(
                f"{flags[name]} {value}: --resume continues a run made with "
                f"{settings[name]}; drop the option, or start over with --force"
            )
    return settings


@contextlib.contextmanager
def _stop_on_signals():
    """An event set by the first Ctrl-C or SIGTERM (training then snapshots and stops);
    a second one interrupts at once."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # only the main thread may handle signals
        return
    signals = [signal.SIGINT, signal.SIGTERM]
    previous = {number: signal.getsignal(number) for number in signals}

    def request_stop(number, frame):
        del frame
        stop.set()
        for each in signals:
            signal.signal(each, previous[each])
        print(
            "rnnfc train: stopping after this step to save the run "
            "(press Ctrl-C again to quit at once)",
            file=sys.stderr,
        )
        del number

    for number in signals:
        signal.signal(number, request_stop)
    try:
        yield stop
    finally:
        for number in signals:
            signal.signal(number, previous[number])


@_command("eval")
def evaluate(
    model_dir: ModelDirArg,
    data: Annotated[
        str,
        typer.Argument(
            help="Labelled data: .csv, .npz, .npy with --labels, or - for CSV on stdin."
        ),
    ],
    json_output: Annotated[
        bool, _output_opt("--json", help="Print the metrics as JSON on stdout, not tables.")
    ] = False,
    min_accuracy: Annotated[
        float | None,
        _output_opt(
            "--min-accuracy",
            min=0.0,
            max=1.0,
            help="Exit with code 1 when accuracy is below this (a CI gate).",
        ),
    ] = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
    label_col: SavedLabelCol = None,
    id_col: SavedIdCol = None,
    time_col: SavedTimeCol = None,
    labels: LabelsFile = None,
    features: FeatureCols = None,
    ignore: IgnoreCols = None,
) -> None:
    """Score the model on labelled DATA: accuracy, macro-F1, log loss, per class, confusion."""
    from rnnfc_cli import api, display

    started = time.perf_counter()
    with display.PredictionProgress("eval", quiet) as progress:
        read = read_options(label_col, id_col, time_col, labels, features, ignore)
        report, classes = api.evaluate(model_dir, data, read, progress)
    result = report.to_dict(classes)
    if json_output:
        _print_json(result)
    else:
        display.render_eval(result)
    if verbose and not quiet:
        _note("eval", f"scored {report.n} sequences in {time.perf_counter() - started:.2f}s")
    if min_accuracy is not None and report.accuracy < min_accuracy:
        raise GateFailedError(
            f"accuracy {report.accuracy:.4f} is below --min-accuracy {min_accuracy:.4f}"
        )


@_command()
def predict(
    model_dir: ModelDirArg,
    data: Annotated[
        str,
        typer.Argument(
            help="Sequences to label: .csv, .npz, .npy, or - for CSV on stdin (labels are ignored)."
        ),
    ],
    output: Annotated[
        Path | None, _output_opt("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    output_format: Annotated[
        str, _output_opt("--format", help="Output format: csv|jsonl.")
    ] = "csv",
    proba: Annotated[
        bool, _output_opt("--proba", help="Add the probability of every class.")
    ] = False,
    batch_size: Annotated[
        int, _run_opt("--batch-size", min=1, max=65536, help="Sequences per compiled call.")
    ] = PREDICT_BATCH,
    quiet: Quiet = False,
    verbose: Verbose = False,
    label_col: SavedLabelCol = None,
    id_col: SavedIdCol = None,
    time_col: SavedTimeCol = None,
    features: FeatureCols = None,
    ignore: IgnoreCols = None,
) -> None:
    """Label every sequence in DATA, in input order: CSV 'id,label' (or JSON lines) on stdout."""
    from rnnfc_cli import api, display

    check_choice("--format", output_format, ("csv", "jsonl"))
    started = time.perf_counter()
    read = read_options(label_col, id_col, time_col, None, features, ignore)
    with (
        display.PredictionProgress("predict", quiet) as progress,
        _output_stream(output) as stream,
    ):
        chunks = api.predict_chunks(model_dir, data, read, batch_size, progress)
        count = 0
        for i, chunk in enumerate(chunks):
            stream.write(_format_predictions(chunk, output_format, proba, header=i == 0))
            stream.flush()
            count += len(chunk.ids)
    if verbose and not quiet:
        _note("predict", f"labelled {count} sequences in {time.perf_counter() - started:.2f}s")


@contextlib.contextmanager
def _output_stream(path: Path | None):
    """Stdout, or ``path`` written whole or not at all (``atomic.atomic_write``)."""
    if path is None:
        yield sys.stdout
        return
    from rnnfc_cli.atomic import atomic_write

    try:
        with atomic_write(path) as handle:
            yield handle
    except OSError as err:
        raise BadInputError(f"{path}: cannot write ({err.strerror})") from None


def _format_predictions(result, output_format: str, proba: bool, header: bool = True) -> str:
    buffer = io.StringIO()
    if output_format == "jsonl":
        for i, (ident, label) in enumerate(zip(result.ids, result.labels, strict=True)):
            record: dict[str, Any] = {"id": ident, "label": label}
            if proba:
                record["probs"] = {
                    str(c): float(p) for c, p in zip(result.classes, result.proba[i], strict=True)
                }
            buffer.write(json.dumps(record) + "\n")
        return buffer.getvalue()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(["id", "label", *([f"prob_{c}" for c in result.classes] if proba else [])])
    for i, (ident, label) in enumerate(zip(result.ids, result.labels, strict=True)):
        row = [ident, label]
        if proba:
            row += [f"{p:.6f}" for p in result.proba[i]]
        writer.writerow(row)
    return buffer.getvalue()


def _write_atomic(path: Path, text: str) -> None:
    with _output_stream(path) as stream:
        stream.write(text)


@_command()
def info(
    model_dir: ModelDirArg,
    json_output: Annotated[
        bool, _output_opt("--json", help="Print everything as JSON on stdout, not a table.")
    ] = False,
    quiet: Quiet = False,
    verbose: Annotated[
        bool, _output_opt("--verbose", "-v", help="Add the training settings to the card.")
    ] = False,
) -> None:
    """Describe a model: architecture, parameters, labels, features, data, scores, versions."""
    from rnnfc_cli import api, display

    del quiet  # info writes nothing on stderr; -q is accepted like everywhere else
    description = api.describe(model_dir)
    if json_output:
        _print_json(description)
    else:
        display.render_info(description, verbose=verbose)


@_command()
def report(
    model_dir: ModelDirArg,
    test_data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Labelled test data: adds test scores and the most confidently wrong sequences.",
        ),
    ] = None,
    output: Annotated[
        str,
        _output_opt("--output", "-o", help="Where to write the HTML page ('-' for stdout)."),
    ] = "report.html",
    quiet: Quiet = False,
    verbose: Verbose = False,
    label_col: SavedLabelCol = None,
    id_col: SavedIdCol = None,
    time_col: SavedTimeCol = None,
    labels: LabelsFile = None,
    features: FeatureCols = None,
    ignore: IgnoreCols = None,
) -> None:
    """Write one self-contained HTML page: learning curves, confusion matrices, per-class
    scores, the model card and, with --data, test scores and the surest mistakes."""
    from rnnfc_cli import api
    from rnnfc_cli import report as report_page

    started = time.perf_counter()
    read = read_options(label_col, id_col, time_col, labels, features, ignore)
    scored = None if test_data is None else api.score(model_dir, test_data, read)
    page = report_page.build(model_dir, scored)
    if output == "-":
        sys.stdout.write(page)
        sys.stdout.flush()
        return
    _write_atomic(Path(output), page)
    if not quiet:
        took = f" in {time.perf_counter() - started:.2f}s" if verbose else ""
        _note("report", f"wrote {output}{took}")


# --- entry point ---------------------------------------------------------------------------


@_command("export")
def export_command(
    model_dir: ModelDirArg,
    output: Annotated[
        Path,
        _output_opt(
            "--output",
            "-o",
            help="The file to write: .onnx (metadata inside), or .stablehlo (metadata beside "
            "it in .stablehlo.json).",
        ),
    ],
    output_format: Annotated[
        str | None,
        _output_opt(
            "--format",
            help="onnx or stablehlo; by default the one the output's ending names. ONNX needs "
            "pip install 'rnnfc\\[onnx]'.",
        ),
    ] = None,
    platforms: Annotated[
        str,
        _output_opt(
            "--platforms",
            help="Where a StableHLO artifact may run, joined by commas: cpu, cuda, rocm, "
            "tpu (an ONNX file runs wherever its runtime does).",
        ),
    ] = DEFAULT_PLATFORMS,
    json_output: Annotated[
        bool, _output_opt("--json", help="Print the metadata as JSON on stdout, not the path.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Write a model that runs without rnnfc: ONNX for any ONNX runtime, or StableHLO
    that jax.export loads and calls.

    The artifact holds the scaling, the network and the ensemble average: it takes raw
    inputs (float32, batch x time x features) and lengths (int32, one per sequence), any
    batch and any length, and returns probabilities (float32, batch x classes), labels in
    the metadata's order.
    """
    from rnnfc_cli import api, export

    metadata = api.export_model(model_dir, output, output_format, platforms)
    if json_output:
        _print_json(metadata)
    else:
        print(output)
    if not quiet:
        where = (
            f"its metadata_props ({', '.join(metadata)})"
            if metadata["format"] == "onnx"
            else export.metadata_path(output)
        )
        _note("export", f"metadata (labels in output order) in {where}")


def _log_traceback() -> Path | None:
    from rnnfc_cli.runtime import cache_dir

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = cache_dir() / "logs" / f"rnnfc-{stamp}-{os.getpid()}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"rnnfc {__version__}\nargv: {sys.argv}\n\n{traceback.format_exc()}")
    except OSError:
        return None
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; errors become one line on stderr."""
    from rnnfc_cli import runtime

    runtime.set_xla_flags()  # before any command starts JAX's backend
    command = "rnnfc"
    try:
        result = app(args=argv, prog_name="rnnfc", standalone_mode=False)
    except RnnfcError as err:  # raised while parsing options (e.g. --config), before a command
        print(f"{command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except typer.TyperException as err:
        context = getattr(err, "ctx", None)
        where = context.command_path if context is not None else command
        message = err.format_message()
        if message:
            print(f"{where}: error: {message}", file=sys.stderr)
        return getattr(err, "exit_code", EXIT_BAD_INPUT)
    except (KeyboardInterrupt, typer.Abort):
        print(f"{command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        sys.stderr.close()
        return EXIT_FAILED
    except Exception as err:
        if os.environ.get("RNNFC_DEBUG"):
            raise
        log = _log_traceback()
        where = f" (traceback in {log})" if log else ""
        print(f"{command}: internal error: {type(err).__name__}: {err}{where}", file=sys.stderr)
        return EXIT_FAILED
    return result if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry point.

    The process ends without Python's finalisation, after the exit handlers (JAX's and
    the others') have run: every file a command writes is complete and closed before it
    returns, and tearing down the interpreter with JAX's runtime in it took about half a
    second of every command that used JAX (0.55 s of a 16 s training, measured).
    """
    code = main()
    atexit.register(_end_process, code)  # registered last, so it runs after the others
    sys.exit(code)


def _end_process(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe or stream: nothing more can be said.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
