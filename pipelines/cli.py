"""`bertpipe`: run the whole pipeline locally, compile it for Kubeflow, or run one step by hand.

Each step subcommand takes the same arguments as its Python function (flags are
generated from the signature, so the two never drift apart).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
from typing import Callable

from components.console import configure_logging
from components.errors import BertpipeError
from components.tracking import DEFAULT_EXPERIMENT, DEFAULT_TRACKING_URI, Tracking
from pipelines.parameters import help_for

log = logging.getLogger("bertpipe")

EXAMPLES = """\
examples:
  bertpipe run                                   # the whole pipeline, locally, on the demo corpus
  bertpipe run --artifact-root s3://bucket/bert --tracking-uri http://127.0.0.1:5000
  bertpipe compile --output bert-pretraining.yaml
  bertpipe export-vocab --source ./my-bert --output-uri ./vocab
  bertpipe create-pretraining-data --corpus 'books/*.txt.gz' --vocab-uri ./vocab --output-uri ./data-128
"""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_signature_flags(parser: argparse.ArgumentParser, function: Callable, overrides: dict | None = None, skip=("tracking",)) -> None:
    """One flag per parameter of `function`, typed and defaulted from its signature."""
    overrides = overrides or {}
    for name, parameter in inspect.signature(function).parameters.items():
        if name in skip:
            continue
        default = overrides.get(name, parameter.default)
        kind = type(default) if default not in (inspect.Parameter.empty, None) else str
        annotation = str(parameter.annotation)
        if "dict" in annotation:
            parser.add_argument(_flag(name), type=parse_json_object, default=default, required=default is inspect.Parameter.empty, help=help_for(name))
        elif "bool" in annotation and kind is not bool:
            parser.add_argument(_flag(name), action=argparse.BooleanOptionalAction, default=None, help=help_for(name) + " (default: auto)")
        elif kind is bool:
            parser.add_argument(_flag(name), action=argparse.BooleanOptionalAction, default=default, help=help_for(name) + " (default: %(default)s)")
        elif default is inspect.Parameter.empty:
            parser.add_argument(_flag(name), required=True, help=help_for(name))
        else:
            kind = float if "float" in annotation else int if "int" in annotation else kind
            parser.add_argument(_flag(name), type=kind, default=default, help=help_for(name) + " (default: %(default)s)")


def parse_json_object(text: str) -> dict:
    """A JSON object flag; keys that are numbers (sequence lengths) become ints."""
    try:
        return json.loads(text, object_pairs_hook=lambda pairs: {int(k) if k.isdigit() else k: v for k, v in pairs})
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not a JSON object: {error}") from error


def add_tracking_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help=help_for("tracking_uri") + " (default: %(default)s)")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help=help_for("experiment") + " (default: %(default)s)")


def call_with_args(function: Callable, args: argparse.Namespace, **extra):
    names = [name for name in inspect.signature(function).parameters if name != "tracking"]
    return function(**{name: getattr(args, name) for name in names}, **extra)


def step_command(function: Callable) -> Callable[[argparse.Namespace], None]:
    """Run a step function from parsed flags, logging to MLflow, and print its result as JSON."""

    def command(args: argparse.Namespace) -> None:
        result = call_with_args(function, args, tracking=Tracking(args.tracking_uri, args.experiment))
        print(json.dumps(result, indent=2, sort_keys=True, default=str))

    return command


def command_run(args: argparse.Namespace) -> None:
    from pipelines.bert_pretraining import bert_pretraining
    from pipelines.local_run import absolute_location, default_kfp_root, run_pipeline_locally, summary_lines

    names = inspect.signature(bert_pretraining.pipeline_func).parameters
    arguments = {name: getattr(args, name) for name in names}
    arguments["artifact_root"] = absolute_location(arguments["artifact_root"])
    arguments["tracking_uri"] = absolute_location(arguments["tracking_uri"])
    outputs = run_pipeline_locally(arguments, args.kfp_root or default_kfp_root(arguments["artifact_root"]))
    print("\n".join(summary_lines(outputs, arguments)))


def command_compile(args: argparse.Namespace) -> None:
    from kfp import compiler

    from pipelines.bert_pretraining import bert_pretraining

    compiler.Compiler().compile(bert_pretraining, args.output)
    print(f"wrote {args.output}")


def build_parser() -> argparse.ArgumentParser:
    from components.evaluation import evaluate
    from components.pretraining_data import create_pretraining_data
    from components.registry import register_model
    from components.training import train_phase
    from components.vocab import export_vocab
    from pipelines.bert_pretraining import bert_pretraining
    from pipelines.local_run import DEMO_SETTINGS

    parser = argparse.ArgumentParser(
        prog="bertpipe", description="BERT pretraining (masked LM + NSP) as Kubeflow Pipelines components.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the whole pipeline locally through kfp.local (demo defaults)",
                              description="Run vocab -> data(128, 512) -> phase 128 -> phase 512 -> evaluate -> register on this machine through kfp.local. Defaults: the bundled demo corpus, a tiny model, a local artifact folder and sqlite MLflow.")
    add_signature_flags(run, bert_pretraining.pipeline_func, overrides={"artifact_root": "bertpipe-artifacts", **DEMO_SETTINGS})
    run.add_argument("--kfp-root", default="", help="kfp.local's pipeline_root (default: <artifact-root>/kfp-local, or ./bertpipe-artifacts/kfp-local for s3://)")
    run.set_defaults(handler=command_run)

    compile_ = commands.add_parser("compile", help="compile the pipeline to KFP YAML for a cluster")
    compile_.add_argument("--output", default="bert-pretraining.yaml", help="YAML file to write (default: %(default)s)")
    compile_.set_defaults(handler=command_compile)

    for name, function, summary in (
        ("export-vocab", export_vocab, "write vocab.txt + tokenizer files from a tokenizer, or train a WordPiece vocab"),
        ("create-pretraining-data", create_pretraining_data, "corpus -> masked-LM/NSP instances as Parquet shards (Google's algorithm)"),
        ("train-phase", train_phase, "one pretraining phase of BertForPreTraining"),
        ("evaluate", evaluate, "MLM and NSP metrics of a model on held-out instances"),
        ("register", register_model, "log a model folder to MLflow and register a new version"),
    ):
        step = commands.add_parser(name, help=summary, description=(inspect.getdoc(function) or summary).split("\n\n")[0])
        add_signature_flags(step, function)
        add_tracking_flags(step)
        step.set_defaults(handler=step_command(function))
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    try:
        args = build_parser().parse_args(argv)
        args.handler(args)
    except BertpipeError as error:
        print(f"bertpipe: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bertpipe: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
