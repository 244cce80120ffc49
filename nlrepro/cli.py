"""``nlrepro <command>``: one entry point; each command lives in its own module.

Modules are imported only when their command runs, so ``nlrepro --help`` is fast.
Each command module defines ``add_arguments(parser)`` and ``main(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from nlrepro.errors import report

# Command modules are named as strings and imported by ``importlib`` only when their command
# runs (lazy on purpose: start-up speed); tests/test_architecture.py reads these names as
# cli's imports.
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("nlrepro.info", "print a model's parameters, GFLOPs and NL placement as JSON"),
    "train": ("nlrepro.run.train", "train and test one run"),
    "sweep": ("nlrepro.sweep.command", "expand a table's grid and launch what is not done"),
    "collect": ("nlrepro.report.collect",
                "gather every run summary into results/<profile>/runs.csv"),
    "table": ("nlrepro.report.tables", "render a paper table (markdown, LaTeX, plot)"),
    "claims": ("nlrepro.report.claims", "check the paper's findings against the runs (scorecard)"),
    "check-videos": ("nlrepro.data.check", "decode-check every video of a list"),
    "make-proxy-data": ("nlrepro.proxy.dataset", "write the synthetic proxy dataset"),
    "prepare-kinetics": ("nlrepro.data.prepare", "re-encode a raw Kinetics download"),
    "attention": ("nlrepro.figure3.command", "draw Figure 3 style attention maps"),
    "eval": ("nlrepro.tools.evaluate", "multi-view test of a run folder or a checkpoint"),
    "export": ("nlrepro.tools.export", "write a run's model as a plain state dict + config"),
    "convert-vnl": ("nlrepro.tools.convert_vnl",
                    "convert an official video-nonlocal-net Caffe2 pickle to a .pt"),
}


def version() -> str:
    """The installed distribution's version (package metadata), else the source tree's."""
    import importlib.metadata as md

    try:
        return md.version("nlrepro")
    except md.PackageNotFoundError:
        from nlrepro import __version__
        return __version__


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nlrepro", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"nlrepro {version()}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of its one-line message")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        if name in _command(argv):  # only import the module that runs
            importlib.import_module(module).add_arguments(p)
    return parser


def _command(argv: list[str]) -> list[str]:
    """The command word: the first argument that is not a top-level option (``--debug``)."""
    return [a for a in argv if not a.startswith("-")][:1]


def main(argv: list[str] | None = None) -> int:
    """Run a command; a user error (bad value, bad file, full or read-only disk) ends in one
    line on stderr and exit code 2, a traceback only with ``--debug``."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        return int(importlib.import_module(args._module).main(args) or 0)
    except Exception as err:  # noqa: BLE001 - sorted into user errors and bugs below
        if args.debug or not report(err, args.command, sys.stderr):
            raise
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
