"""The one family of errors the library raises for problems a user can fix.

The CLI turns each into a single line on stderr and the error's exit code, so
no user mistake ever surfaces as a Python traceback.
"""

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class RnnfcError(Exception):
    """Base class; ``exit_code`` is what the process returns."""

    exit_code = EXIT_FAILED


class BadInputError(RnnfcError):
    """The data, a file or an option is wrong: the message names the place."""

    exit_code = EXIT_BAD_INPUT


class ModelDirError(RnnfcError):
    """A model directory is missing, incomplete, from the future or would be overwritten."""

    exit_code = EXIT_BAD_INPUT


class SaveFailedError(RnnfcError):
    """Writing a model directory or a snapshot failed (a full disk, a lost mount)."""

    exit_code = EXIT_FAILED


class MissingExtraError(RnnfcError):
    """An optional dependency a command needs is not installed; the message says how."""

    exit_code = EXIT_FAILED


class TrainingDivergedError(RnnfcError):
    """The training loss became NaN or infinite."""

    exit_code = EXIT_FAILED


class GateFailedError(RnnfcError):
    """A quality gate (e.g. ``--min-accuracy``) was not met."""

    exit_code = EXIT_FAILED


class TrainingInterruptedError(RnnfcError):
    """Training was stopped by Ctrl-C or SIGTERM; ``saved`` says whether it can resume."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, epoch: int, step: int, saved: bool):
        self.epoch, self.step, self.saved = epoch, step, saved
        where = f"at epoch {epoch}, step {step}" if step else "before the first step"
        super().__init__(f"interrupted {where}" + ("; the run is saved" if saved else ""))
