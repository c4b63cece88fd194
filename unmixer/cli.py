"""Command line: ``python -m unmixer COMMAND ...``.

Each command lives in its own module under :mod:`unmixer.commands`, which exposes
``add_parser(subparsers)``; the parser it adds sets ``func(args) -> int``. Bad input
(:class:`~unmixer.errors.UnmixerError`) exits with status 2 and one line on stderr, never a
traceback; argparse usage errors exit with 2 as well.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from unmixer.errors import UnmixerError

# One line per command module; each adds its own sub-command.
COMMAND_MODULES = [
    "unmixer.commands.extract",
    "unmixer.commands.batch",
    "unmixer.commands.nmf",
    "unmixer.commands.drums",
]


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m unmixer`` argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="python -m unmixer",
        description="Unmixer: extract the repeating loops of songs, and more.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 internal error, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UnmixerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug, not bad input: one line unless asked for more
        if os.environ.get("UNMIXER_DEBUG"):
            raise
        print(f"internal error: {type(err).__name__}: {err} (set UNMIXER_DEBUG=1 for details)",
              file=sys.stderr)
        return 1
