"""The meobench command line: parses options and calls the library with keyword arguments.

Each command lives in its own module and registers itself on ``app``; the import
order below is the order ``meobench --help`` lists them in.
"""

# isort: off
from meobench.cli import run  # noqa: F401
from meobench.cli import profile  # noqa: F401
from meobench.cli import report  # noqa: F401
from meobench.cli import flops  # noqa: F401
from meobench.cli import inspect  # noqa: F401
from meobench.cli import compare  # noqa: F401
from meobench.cli import calibrate  # noqa: F401
from meobench.cli import export  # noqa: F401

# isort: on
from meobench.cli.common import app


def main() -> None:
    app()
