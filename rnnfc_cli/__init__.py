"""rnnfc: RNN sequence classifiers from the shell."""

__version__ = "0.1.0"
