"""rnnfc: RNN sequence classifiers from the shell.

Importing the package changes nothing in the process: the CLI (``cli.main``) and the
library's entry points (``api``) set up JAX themselves (``runtime.configure_jax``).
"""

__version__ = "0.2.0"
