"""Worker entrypoint, the same for an in-process Airflow task and a Kubernetes pod:

    python -m synthcorpus.worker generate --input URI --output URI --parts URI --marker URI --shard N [--budget-entry URI]

It runs one ``generate`` work unit under the stage completion protocol (``synthcorpus.stages.generate``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback

from .engines import EngineError
from .process import exit_now
from .storage import StorageError


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m synthcorpus.worker")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate one plan shard into one output shard")
    gen.add_argument("--input", required=True, help="URI of the plan shard (Parquet)")
    gen.add_argument("--output", required=True, help="URI of the output shard (Parquet)")
    gen.add_argument("--parts", required=True, help="URI of the shard's checkpoint parts folder")
    gen.add_argument("--marker", required=True, help="URI of the shard's commit marker (JSON)")
    gen.add_argument("--shard", required=True, type=int, help="the shard index")
    gen.add_argument("--budget-entry", default=None, help="URI of the shard's running totals (the run-wide budget)")
    args = parser.parse_args(argv)
    from .stages.generate import run_unit

    return run_unit({"index": args.shard, "input": args.input, "output": args.output, "parts": args.parts,
                     "marker": args.marker, "budget_entry": args.budget_entry})


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        stats = main()
    except (EngineError, StorageError, FileNotFoundError) as exc:
        print(f"synthcorpus.worker: error: {exc}", file=sys.stderr)
        exit_now(1)
    except Exception:  # a bug, not bad input: its traceback, then the same clean exit
        traceback.print_exc()
        exit_now(1)
    print(json.dumps(stats, default=str))
    exit_now(0)
