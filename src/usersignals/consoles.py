"""The command line's consoles: tables and answers on stdout, messages on stderr.

Printed to a file or a pipe (a CI log, a review tool), rich takes 80 columns and wraps or cuts
what is wider ("recent_engagement…", a plan's details over two lines): there a console gets
:data:`PIPED_WIDTH` columns, as much as a line needs (a table is only as wide as its
content), unless COLUMNS says otherwise.
"""

from __future__ import annotations

import os

from rich.console import Console

PIPED_WIDTH = 240


def console(stderr: bool = False) -> Console:
    """A console on stdout (or ``stderr``), wide when it is not a terminal."""
    made = Console(stderr=stderr)
    if made.is_terminal or "COLUMNS" in os.environ:
        return made
    return Console(stderr=stderr, width=PIPED_WIDTH)
