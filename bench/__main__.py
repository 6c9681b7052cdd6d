"""``python -m bench NAME [options]``, or ``python -m bench all [--quick]``.

Each benchmark is a module of this package with ``add_arguments(parser)`` and
``run(args) -> dict``; ``run`` prints a summary and, as its last line, the dict as
one JSON object. ``all`` runs every one in the order below and prints, last, one
JSON object of all their figures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from types import ModuleType

BENCHMARKS: dict[str, str] = {
    "auction": "bench.auction",
    "tasks": "bench.tasks",
    "api": "bench.api",
    "burst": "bench.burst",
    "converge": "bench.converge",
    "memory": "bench.memory",
    "docker": "bench.docker_task",
    "crash": "bench.crash",
    "cells": "bench.cells",
    "lost-cell": "bench.lost_cell",
}
"""Benchmark name → its module, imported only when it runs."""


def _module(name: str) -> ModuleType:
    return importlib.import_module(BENCHMARKS[name])


def _parser(name: str) -> tuple[ModuleType, argparse.ArgumentParser]:
    module = _module(name)
    parser = argparse.ArgumentParser(
        prog=f"python -m bench {name}",
        description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    return module, parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark named on the command line (only its module is imported)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=[*BENCHMARKS, "all"], help="the benchmark to run")
    known, rest = parser.parse_known_args(argv)
    if known.name != "all":
        module, sub = _parser(known.name)
        module.run(sub.parse_args(rest))
        return 0
    every = argparse.ArgumentParser(prog="python -m bench all")
    every.add_argument("--quick", action="store_true", help="small sizes: minutes, not more")
    args = every.parse_args(rest)
    results = {}
    for name in BENCHMARKS:
        module, sub = _parser(name)
        print(f"== {name}", flush=True)
        results[name] = module.run(sub.parse_args(["--quick"] if args.quick else []))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
