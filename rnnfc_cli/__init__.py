"""rnnfc: RNN sequence classifiers from the shell."""

from rnnfc_cli import runtime as _runtime

__version__ = "0.1.0"

_runtime.set_xla_flags()
