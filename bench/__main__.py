"""``python -m bench NAME [options]``, or ``python -m bench all [--quick]``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from bench import docker_task

Benchmark = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], Any]]

BENCHMARKS: dict[str, Benchmark] = {
    "docker": (docker_task.add_arguments, docker_task.run),
}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark named on the command line; its exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    names = parser.add_subparsers(dest="name", required=True)
    for name, (add_arguments, _) in BENCHMARKS.items():
        add_arguments(names.add_parser(name, help=(BENCHMARKS[name][1].__doc__ or "").strip()))
    every = names.add_parser("all", help="every benchmark, one after another")
    every.add_argument("--quick", action="store_true", help="small sizes: minutes, not more")
    args = parser.parse_args(argv)
    if args.name == "all":
        results = {}
        for name, (add_arguments, run) in BENCHMARKS.items():
            sub = argparse.ArgumentParser()
            add_arguments(sub)
            results[name] = run(sub.parse_args(["--quick"] if args.quick else []))
        print(json.dumps(results))
        return 0
    BENCHMARKS[args.name][1](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
