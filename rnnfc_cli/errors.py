"""The one family of errors the library raises for problems a user can fix.

The CLI turns each into a single line on stderr and the error's exit code, so
no user mistake ever surfaces as a Python traceback.
"""

EXIT_OK = 0
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


class TrainingDivergedError(RnnfcError):
    """The training loss became NaN or infinite."""

    exit_code = EXIT_FAILED


class GateFailedError(RnnfcError):
    """A quality gate (e.g. ``--min-accuracy``) was not met."""

    exit_code = EXIT_FAILED
