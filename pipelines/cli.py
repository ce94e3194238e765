"""`bertpipe`: run the whole pipeline locally, compile it for Kubeflow, or run one step by hand.

Each step subcommand takes the same arguments as its Python function (flags are
generated from the signature, so the two never drift apart).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import sys
from typing import Callable

from components.core import storage
from components.core.console import configure_logging
from components.core.corpus import CorpusSettings
from components.core.errors import BertpipeError
from components.core.redact import mask
from components.core.tracking import DEFAULT_EXPERIMENT, FALLBACK_TRACKING_URI, Tracking, default_tracking_uri
from pipelines.cli_flags import add_settings_flags, settings_from_args
from pipelines.parameters import help_for

log = logging.getLogger("bertpipe")

EXAMPLES = """\
examples:
  bertpipe run                                   # the whole pipeline, locally, on the demo corpus
  bertpipe run --resume RUN_ID                   # continue a failed or killed run in its folder
  bertpipe run --artifact-root s3://bucket/bert --tracking-uri http://127.0.0.1:5000
  bertpipe compile --output bert-pretraining.yaml --gpu-type nvidia-tesla-a100 --node-selector pool=gpu
  bertpipe submit --host http://localhost:8080 --package bert-pretraining.yaml --run-name try-1 --param artifact_root=s3://bucket/bert --param tracking_uri=http://mlflow:5000
  bertpipe schedule --host http://localhost:8080 --package bert-pretraining.yaml --name weekly --cron '0 0 3 * * 0'
  bertpipe promote bert-pretraining 3 --reason "better on the new eval set"
  bertpipe history bert-pretraining
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


TRACKING_DEFAULT_HELP = f" (default: $MLFLOW_TRACKING_URI, else {FALLBACK_TRACKING_URI})"


def add_tracking_uri_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", default=default_tracking_uri(), help=help_for("tracking_uri") + TRACKING_DEFAULT_HELP)


def add_tracking_flags(parser: argparse.ArgumentParser) -> None:
    add_tracking_uri_flag(parser)
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help=help_for("experiment") + " (default: %(default)s)")
    parser.add_argument("--pipeline-run-id", default="", help="nest this step's MLflow run under the pipeline run with this id (set by the pipeline)")


def step_command(name: str, summary: str, settings_cls, inputs: dict[str, tuple[str, str | None]], entry: str, call: Callable,
                 after: Callable[[dict], None] | None = None, also: tuple = ()) -> tuple:
    """`bertpipe <name>` as a build_parser entry: flags for the step's inputs/outputs (name -> (help, default; None =
    required)), flags generated from its settings dataclass (and the classes in `also`, e.g. CorpusSettings), and the
    tracking flags. `entry` ("module:function") is the step's entry function, imported only when the command runs;
    `call(step, args, settings, tracking, *also_settings)` calls it, the result is printed as JSON, and `after(result)`
    may then raise to exit non-zero."""

    def add_flags(step: argparse.ArgumentParser) -> None:
        for input_name, (text, default) in inputs.items():
            step.add_argument(_flag(input_name), required=default is None, default=default, type=type(default) if default is not None else str, help=text)
        for cls in (settings_cls, *also):
            add_settings_flags(step, cls)
        add_tracking_flags(step)
        step.set_defaults(handler=command)

    def command(args: argparse.Namespace) -> None:
        settings = [settings_from_args(cls, args, name) for cls in (settings_cls, *also)]
        module, _, function = entry.partition(":")
        step = getattr(importlib.import_module(module), function)
        result = call(step, args, settings[0], Tracking(args.tracking_uri, args.experiment, args.pipeline_run_id), *settings[1:])
        print(mask(json.dumps(result, indent=2, sort_keys=True, default=str)))
        if after:
            after(result)

    return name, summary, summary, add_flags


def json_object(text: str, flag_name: str) -> dict:
    try:
        value = parse_json_object(text)
    except argparse.ArgumentTypeError as error:
        raise BertpipeError(f"{flag_name}: {error}") from error
    if not isinstance(value, dict):
        raise BertpipeError(f"{flag_name}: expected a JSON object, like {{\"128\": \"./data-128\"}}")
    return value


def refuse_conflict(registration: dict) -> None:
    """A promotion conflict moved nothing and needs a person: exit 2 (after the result is printed) saying what to do."""
    promotion = registration["promotion"]
    if promotion["decision"] == "conflict":
        raise BertpipeError(
            f"promotion of {registration['name']} version {registration['version']} ended in a conflict ({promotion['reasons'][-1]}); "
            f"nothing moved: evaluate again against the new champion, or `bertpipe promote {registration['name']} {registration['version']} --reason ...`"
        )


def command_run(args: argparse.Namespace) -> None:
    from pipelines.bert_pretraining import bert_pretraining
    from pipelines.local_run import absolute_location, default_kfp_root, run_pipeline_locally, summary_lines
    from pipelines.pipeline_parameters import check_arguments

    names = inspect.signature(bert_pretraining.pipeline_func).parameters
    arguments = {name: getattr(args, name) for name in names}
    check_arguments(arguments, "bertpipe run")  # every bad value now, not a step failing minutes later
    storage.check_output(arguments["artifact_root"], "--artifact-root")  # a missing bucket now, not after the vocab
    arguments["artifact_root"] = absolute_location(arguments["artifact_root"])
    arguments["tracking_uri"] = absolute_location(arguments["tracking_uri"])
    outputs = run_pipeline_locally(arguments, args.kfp_root or default_kfp_root(arguments["artifact_root"]), verbose=args.verbose)
    print("\n".join(summary_lines(outputs, arguments)))
    refuse_conflict(outputs["registration"])


def command_promote(args: argparse.Namespace) -> None:
    from components.registry.promotion import promote

    print(json.dumps(promote(args.name, args.version, tracking_uri=args.tracking_uri, alias=args.alias, reason=args.reason, actor=args.actor), indent=2))


def command_rollback(args: argparse.Namespace) -> None:
    from components.registry.promotion import rollback

    print(json.dumps(rollback(args.name, tracking_uri=args.tracking_uri, alias=args.alias, reason=args.reason, actor=args.actor), indent=2))


def command_fill_mask(args: argparse.Namespace) -> None:
    from components.evaluation.fill_mask import fill_mask, format_table

    result = fill_mask(args.text, args.model, top_k=args.top_k, tracking_uri=args.tracking_uri)
    print(json.dumps(result, indent=2) if args.json else format_table(result))


def command_history(args: argparse.Namespace) -> None:
    from components.registry.history import history, render_table

    events = history(args.name, tracking_uri=args.tracking_uri, alias=args.alias)
    print(json.dumps(events, indent=2) if args.json else render_table(events))


def command_stack(args: argparse.Namespace) -> None:
    from pipelines.stack import stack_command

    print(stack_command(args.action, args.dir, args.bucket))


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=".bertpipe-stack", help="folder for the servers' data, logs and state (default: %(default)s)")
    parser.add_argument("--bucket", default="bertpipe", help="S3 bucket to create (default: %(default)s)")


def _run_flags(run: argparse.ArgumentParser) -> None:
    from pipelines.bert_pretraining import bert_pretraining
    from pipelines.local_run import DEMO_SETTINGS

    add_signature_flags(run, bert_pretraining.pipeline_func, overrides={"artifact_root": "bertpipe-artifacts", "tracking_uri": default_tracking_uri(), **DEMO_SETTINGS},
                        skip=("resume_run_id",))
    run.add_argument("--resume", dest="resume_run_id", default="", metavar="RUN_ID", help=help_for("resume_run_id"))
    next(action for action in run._actions if action.dest == "tracking_uri").help = help_for("tracking_uri") + TRACKING_DEFAULT_HELP  # no credentials in --help
    run.add_argument("--kfp-root", default="", help="kfp.local's pipeline_root (default: <artifact-root>/kfp-local, or ./bertpipe-artifacts/kfp-local for s3://)")
    run.add_argument("--verbose", action="store_true", help="stream every task's full output (kfp.local's own view) instead of a line per task")
    run.set_defaults(handler=command_run)


def _alias_flags(handler: Callable, *positionals: tuple[str, str]) -> Callable:
    """promote and rollback: the alias move's positionals, reason, alias, actor and tracking URI."""

    def add_flags(parser: argparse.ArgumentParser) -> None:
        for name, text in positionals:
            parser.add_argument(name, help=text)
        parser.add_argument("--reason", required=True, help="why: recorded in the version's tags")
        parser.add_argument("--alias", default="champion", help="alias to move (default: %(default)s)")
        parser.add_argument("--actor", default=None, help="who: recorded in tags (default: $USER)")
        add_tracking_uri_flag(parser)
        parser.set_defaults(handler=handler)

    return add_flags


def _fill_mask_flags(fill: argparse.ArgumentParser) -> None:
    fill.add_argument("text", help="a sentence with one or more [MASK] tokens, e.g. 'the [MASK] of denmark'")
    fill.add_argument("--model", default="", help="model folder, s3:// URI or models:/name@alias (default: models:/bert-pretraining@champion)")
    fill.add_argument("--top-k", type=int, default=5, help="guesses per [MASK] (default: %(default)s)")
    fill.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    fill.add_argument("--tracking-uri", default="", help="MLflow tracking URI for models:/ URIs (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    fill.set_defaults(handler=command_fill_mask)


def _history_flags(history: argparse.ArgumentParser) -> None:
    history.add_argument("name", help="registered model name")
    history.add_argument("--alias", default=None, help="only this alias's moves (default: all)")
    history.add_argument("--json", action="store_true", help="print the events as JSON instead of a table")
    add_tracking_uri_flag(history)
    history.set_defaults(handler=command_history)


def _stack_flags(stack: argparse.ArgumentParser) -> None:
    stack.add_argument("action", choices=["up", "down", "status"])
    add_stack_arguments(stack)
    stack.set_defaults(handler=command_stack)


def _step_commands() -> list[tuple]:
    """The five steps' subcommands (and probe): each calls the one entry function the KFP component calls."""
    from components.data.settings import DataSettings
    from components.evaluation.settings import EvaluationSettings, ProbeSettings
    from components.registry.settings import PromotionSettings
    from components.training.settings import LaunchSettings, TrainingSettings
    from components.vocab.settings import VocabSettings

    data_uris = {"data_uris": (help_for("data_uris"), None)}
    return [
        step_command(
            "export-vocab", "write vocab.txt + tokenizer files from a tokenizer, or train a WordPiece vocab on the corpus", VocabSettings,
            {"output_uri": (help_for("output_uri"), None), "source": (help_for("source"), ""), "corpus": (help_for("corpus"), "")},
            "components.vocab.export:export_vocab",
            lambda step, args, settings, tracking, corpus_settings: step(args.output_uri, source=args.source, corpus=args.corpus, settings=settings,
                                                                         corpus_settings=corpus_settings, tracking=tracking),
            also=(CorpusSettings,),
        ),
        step_command(
            "probe", "train a small classifier on the model's frozen sentence representation (and the champion's): accuracy, macro-F1", ProbeSettings,
            {"model_uri": ("the model: a folder, s3:// URI or models:/NAME@ALIAS", None), "dataset": ("labeled CSV/JSONL/Parquet (text, label[, split]), or 'demo'", "demo"),
             "output_uri": ("folder for probe.json", None), "registered_model_name": ("also probe this registered model's champion ('' for none)", "")},
            "components.evaluation.probe:probe",
            lambda step, args, settings, tracking: step(args.model_uri, args.dataset, args.output_uri, registered_model_name=args.registered_model_name,
                                                        settings=settings, tracking=tracking),
        ),
        step_command(
            "train-phase", "one pretraining phase of BertForPreTraining (in this process, under torchrun, or as a TrainJob)", TrainingSettings,
            {"data_uri": (help_for("data_uri"), None), "vocab_uri": (help_for("vocab_uri"), None), "output_uri": (help_for("output_uri"), None)},
            "components.training.phase:train_phase",
            # An empty --tracking-uri logs nowhere (the ranks of a launcher that was given no tracking).
            lambda step, args, settings, tracking, launch: step(args.data_uri, args.vocab_uri, args.output_uri, settings=settings, launch=launch,
                                                                tracking=tracking if args.tracking_uri else None),
            also=(LaunchSettings,),
        ),
        step_command(
            "create-pretraining-data", "corpus -> masked-LM/NSP instances as Parquet shards (Google's algorithm)", DataSettings,
            {"corpus": (help_for("corpus"), None), "vocab_uri": (help_for("vocab_uri"), None), "output_uri": (help_for("output_uri"), None),
             "num_workers": (help_for("num_workers") + " (default: %(default)s)", 1)},
            "components.data.local:create_pretraining_data",
            lambda step, args, settings, tracking, corpus_settings: step(args.corpus, args.vocab_uri, args.output_uri, settings=settings,
                                                                         corpus_settings=corpus_settings, num_workers=args.num_workers, tracking=tracking),
            also=(CorpusSettings,),
        ),
        step_command(
            "evaluate", "MLM and NSP metrics of a model, and of the registered model's champion, on the same held-out instances", EvaluationSettings,
            {"model_uri": (help_for("model_uri"), None), **data_uris, "output_uri": (help_for("output_uri"), None),
             "registered_model_name": ("also evaluate this registered model's champion on the same data ('' = none)", "")},
            "components.evaluation.evaluate:evaluate",
            lambda step, args, settings, tracking: step(args.model_uri, json_object(args.data_uris, "--data-uris"), args.output_uri,
                                                        registered_model_name=args.registered_model_name, settings=settings, tracking=tracking),
        ),
        step_command(
            "register", "register a model as a new version, let it challenge the champion, write the run report", PromotionSettings,
            {"model_uri": (help_for("model_uri"), None), "evaluation_uri": (help_for("evaluation_uri"), None), **data_uris,
             "registered_model_name": (help_for("registered_model_name"), None), "report_uri": (help_for("report_uri"), ""),
             "probe_uri": ("folder of `bertpipe probe`'s probe.json, for the policy and the model card ('' = none)", "")},
            "components.registry.step:register_and_promote",
            lambda step, args, settings, tracking: step(args.model_uri, args.evaluation_uri, json_object(args.data_uris, "--data-uris"),
                                                        registered_model_name=args.registered_model_name, report_uri=args.report_uri,
                                                        settings=settings, tracking=tracking, probe_uri=args.probe_uri),
            after=refuse_conflict,
        ),
    ]


def subcommands() -> list[tuple]:
    """(name, summary, description, add_flags) of every subcommand, in --help order."""
    from pipelines.cli_cluster import cluster_commands

    return [
        ("run", "run the whole pipeline locally through kfp.local (demo defaults)",
         "Run vocab -> data(128, 512) -> phase 128 -> phase 512 -> evaluate -> register on this machine through kfp.local. Defaults: the bundled demo "
         "corpus, a tiny model, a local artifact folder and sqlite MLflow.", _run_flags),
        *cluster_commands(),
        ("promote", "point an alias (default: champion) at a model version by hand", None,
         _alias_flags(command_promote, ("name", "registered model name"), ("version", "model version to promote"))),
        ("rollback", "move an alias (default: champion) back to the version it replaced", None,
         _alias_flags(command_rollback, ("name", "registered model name"))),
        ("fill-mask", "the model's top guesses for each [MASK] in a sentence (default: the champion)",
         "Top-k predictions for each [MASK] in TEXT, from a model folder, an s3:// URI or a registry URI.", _fill_mask_flags),
        ("history", "every alias move of a registered model: when, from which version to which, by whom, why", None, _history_flags),
        ("stack", "start/stop a local SeaweedFS (S3) + MLflow server pair for trying the S3 path",
         'Local S3 (SeaweedFS) and MLflow servers on free loopback ports. `eval "$(bertpipe stack up)"` exports their environment.', _stack_flags),
        *_step_commands(),
    ]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `bertpipe` parser. Every subcommand is listed; `only` names the one whose flags are added ('' adds none,
    None all). main passes the command it was given, so `bertpipe train-phase` never imports what another
    subcommand's flags need (kfp for `run` and `compile`), and `bertpipe --help` imports no step at all."""
    parser = argparse.ArgumentParser(
        prog="bertpipe", description="BERT pretraining (masked LM + NSP) as Kubeflow Pipelines components.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary, description, add_flags in subcommands():
        command = commands.add_parser(name, help=summary, description=description or summary)
        if only is None or only == name:
            add_flags(command)
    return parser


def chosen_command(argv: list[str]) -> str:
    """The subcommand in a command line ('' for none): the first word that is not an option (the top level has only -h)."""
    return next((word for word in argv if not word.startswith("-")), "")


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    try:
        argv = sys.argv[1:] if argv is None else argv
        args = build_parser(only=chosen_command(argv)).parse_args(argv)
        args.handler(args)
    except BertpipeError as error:
        print(f"bertpipe: error: {mask(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bertpipe: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
