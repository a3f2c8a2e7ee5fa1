"""``synthcorpus`` command line: validate specs, run a corpus without Airflow, print summaries."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from pathlib import Path

from .spec import SpecError, load_spec


def _validate(args: argparse.Namespace) -> int:
    from .stages.preflight import check as preflight

    status = 0
    for path in args.specs:
        try:
            spec = load_spec(path)
            preflight(spec)  # open every file, render every template, resolve the engines and the storage
        except SpecError as exc:
            status = 2
            print(f"{len(exc.problems)} problem(s) in {path}:", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
        else:
            print(f"{path}: ok (corpus {spec.name!r}, DAG {spec.dag_id}, {spec.documents} documents)")
    return status


def _run(args: argparse.Namespace) -> int:
    from .stages.runner import run_pipeline
    from .summary import run_summary

    spec = load_spec(args.spec)
    run_id = args.run_id or "cli__" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    params = {"full_rebuild": True} if args.full_rebuild else {}
    if spec.publish.approval.required:  # a person approves in Airflow (the approval task); this process cannot ask
        run_pipeline(args.spec, run_id, params, until="quality_gate")
        print(run_summary(spec, run_id))
        print(f"{args.spec}: field 'publish.approval.required' is true: run {run_id} stops after the quality gate, "
              f"nothing is published; releases of this corpus are approved in Airflow (its DAG's approval task)",
              file=sys.stderr)
        return 1
    run_pipeline(args.spec, run_id, params, until="publish")  # the summary is printed here, not logged by its task
    print(run_summary(spec, run_id))
    return 0


def _summary(args: argparse.Namespace) -> int:
    from .summary import latest_summary, run_summary

    spec = load_spec(args.spec)
    print(run_summary(spec, args.run_id) if args.run_id else latest_summary(spec))
    return 0


def _prompts_preview(args: argparse.Namespace) -> int:
    from .stages.runner import preview_prompts

    spec = load_spec(args.spec)
    for row in preview_prompts(spec, args.n):
        topic = row["topic"] if row["topic_in_prompt"] else f"(not named; cluster: {row['topic']})"
        print(f"=== {row['prompt_id']}  {row['template']} v{row['template_version']}  audience={row['audience']}  "
              f"seed={row['seed_kind']}  topic={topic}  style={row['style_index']}")
        print(row["prompt"])
        print()
    return 0


def _render_config(args: argparse.Namespace) -> int:
    """Render airflow.cfg.template: ${NAME} / ${NAME:-default} from the environment; the shared secrets
    from (or, first time, into) secrets.json beside the output."""
    from .deploy import SECRETS_FILE, DeployError, render

    output = Path(args.output)
    try:
        text = render(Path(args.template), dict(os.environ), output.parent / SECRETS_FILE)
    except DeployError as exc:
        print(exc, file=sys.stderr)
        return 2
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(f"wrote {output}")
    return 0


def _stack(args: argparse.Namespace) -> int:
    """The deployment (scheduler, dag-processor, triggerer, api-server, Celery worker) in $AIRFLOW_HOME."""
    from .deploy import DeployError, Stack

    stack = Stack.from_env()
    try:
        if args.action == "up":
            stack.up()
        elif args.action == "down":
            stack.down()
        else:
            print(stack.status())
    except DeployError as exc:
        print(f"synthcorpus stack {args.action}: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="synthcorpus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="validate corpus spec files (exit 2 on any problem)")
    p.add_argument("specs", nargs="+")
    p.set_defaults(func=_validate)
    p = sub.add_parser("run", help="run the whole pipeline in-process, without Airflow (a refresh of the latest version)")
    p.add_argument("spec")
    p.add_argument("--run-id")
    p.add_argument("--full-rebuild", action="store_true", help="build the version from nothing, not on the latest one")
    p.set_defaults(func=_run)
    p = sub.add_parser("summary", help="one-screen summary of the latest version (or of --run-id)")
    p.add_argument("spec")
    p.add_argument("--run-id")
    p.set_defaults(func=_summary)
    p = sub.add_parser("prompts", help="inspect prompts")
    psub = p.add_subparsers(dest="prompts_command", required=True)
    pp = psub.add_parser("preview", help="render the first N prompts of a spec (seeds, topics, prompts in memory)")
    pp.add_argument("spec")
    pp.add_argument("--n", type=int, default=5)
    pp.set_defaults(func=_prompts_preview)
    p = sub.add_parser("render-config", help="render airflow.cfg.template with ${VARS} from the environment")
    p.add_argument("template")
    p.add_argument("output")
    p.set_defaults(func=_render_config)
    p = sub.add_parser("stack", help="start, stop or show the Airflow deployment in $AIRFLOW_HOME (make up/down/status)")
    p.add_argument("action", choices=("up", "down", "status"))
    p.set_defaults(func=_stack)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except Exception as exc:
        if not explained(exc):
            raise  # a bug: its traceback is what a report needs
        # An error of this project names the file, the field and what was expected (the gate's failure comes
        # after its own table): a traceback would only bury it.
        first, *rest = str(exc).splitlines() or [""]
        print("\n".join([f"synthcorpus {args.command}: {type(exc).__name__}: {first}", *rest]), file=sys.stderr)
        return 1


def explained(exc: BaseException) -> bool:
    """Whether an error is one of this project's own (defined in the synthcorpus package), whose message
    explains it: shown without a traceback."""
    return any(cls.__module__.split(".")[0] == "synthcorpus" for cls in type(exc).__mro__ if cls is not object)


def entry() -> None:
    """The console script: ``main``, then an exit that skips interpreter teardown (``process.exit_now``)."""
    from .process import exit_now

    try:
        code = main()
    except SystemExit as exc:  # argparse's usage errors (exit 2), --help (exit 0)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    exit_now(code)


if __name__ == "__main__":
    entry()
