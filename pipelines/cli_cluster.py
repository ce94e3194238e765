"""`bertpipe compile`, `submit` and `schedule`: the pipeline for a cluster, and runs of it on Kubeflow Pipelines."""

from __future__ import annotations

import argparse
import inspect
import os

from components.core.errors import BertpipeError
from components.core.redact import mask


def command_compile(args: argparse.Namespace) -> None:
    from kfp import compiler

    from pipelines.bert_pretraining import build_pipeline
    from pipelines.kubernetes import cluster_settings_from_args
    from pipelines.locations import check_cluster_locations

    locations = {name: value for name, value in (("artifact_root", args.artifact_root), ("tracking_uri", args.tracking_uri)) if value}
    if locations:  # compiled-in defaults must be cluster locations too; unset ones are checked at submit
        check_cluster_locations({"artifact_root": "s3://unset", "tracking_uri": "http://unset", **locations},
                                allow_local=args.allow_local_storage, action="bertpipe compile")
    compiler.Compiler().compile(build_pipeline(cluster_settings_from_args(args), locations), args.output)
    print(f"wrote {args.output}")


def pipeline_arguments(pairs: list[str]) -> dict:
    """--param NAME=VALUE pairs, typed by the pipeline's signature (KFP rejects "900" for an int)."""
    from pipelines.bert_pretraining import bert_pretraining

    parameters = inspect.signature(bert_pretraining.pipeline_func).parameters
    arguments = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in parameters:
            raise BertpipeError(f"--param {pair!r}: expected NAME=VALUE with NAME one of {', '.join(parameters)}")
        kind = getattr(parameters[name].annotation, "__name__", parameters[name].annotation)
        if kind == "bool":
            if value.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise BertpipeError(f"--param {name}={value!r}: expected true or false")
            arguments[name] = value.lower() in ("1", "true", "yes", "on")
            continue
        try:
            arguments[name] = {"int": int, "float": float}.get(kind, str)(value)
        except ValueError:
            raise BertpipeError(f"--param {name}={value!r}: expected {'an integer' if kind == 'int' else 'a number'}") from None
    return arguments


def cluster_run_arguments(args: argparse.Namespace, action: str) -> dict:
    """--param values, checked by their steps' rules; a cluster run needs S3 artifacts and an MLflow server (pipelines.locations)."""
    from pipelines.locations import check_cluster_locations, package_defaults
    from pipelines.pipeline_parameters import check_arguments

    arguments = pipeline_arguments(args.param)
    check_arguments(arguments, action)
    compiled = package_defaults(args.package) if args.package and os.path.isfile(args.package) else {}
    check_cluster_locations({**compiled, **arguments}, allow_local=args.allow_local_storage, action=action)
    return arguments


def command_submit(args: argparse.Namespace) -> None:
    from pipelines import kfp_client

    arguments = cluster_run_arguments(args, "bertpipe submit")
    client = kfp_client.connect(kfp_client.endpoint_from_args(args))
    run = kfp_client.submit(client, args.package, arguments, run_name=args.run_name, experiment=args.experiment,
                            namespace=args.namespace, service_account=args.service_account)
    print(mask(f"run {run.run_id}: {run.url}"))


def command_schedule(args: argparse.Namespace) -> None:
    from pipelines import kfp_client

    if args.action != "create" and args.action != "list" and not args.target:
        raise BertpipeError(f"bertpipe schedule {args.action} needs the schedule's name or id")
    client = kfp_client.connect(kfp_client.endpoint_from_args(args))
    if args.action == "create":
        if not (args.package and args.name and args.cron):
            raise BertpipeError("bertpipe schedule needs --package, --name and --cron to create a schedule")
        schedules = [kfp_client.create_schedule(client, args.package, cluster_run_arguments(args, "bertpipe schedule"), name=args.name, cron=args.cron,
                                                experiment=args.experiment, namespace=args.namespace, max_concurrency=args.max_concurrency,
                                                catchup=args.catchup, service_account=args.service_account)]
    elif args.action == "list":
        schedules = kfp_client.list_schedules(client, args.namespace)
    else:
        change = {"pause": kfp_client.pause_schedule, "resume": kfp_client.resume_schedule, "delete": kfp_client.delete_schedule}[args.action]
        schedules = [change(client, args.target, args.namespace)]
    for schedule in schedules:
        state = "enabled" if schedule.enabled else "paused"
        print(f"{schedule.recurring_run_id}  {schedule.name}  {schedule.cron!r}  {state}")


def add_submission_arguments(parser: argparse.ArgumentParser, package_required: bool = True) -> None:
    from pipelines.kfp_client import add_endpoint_arguments

    add_endpoint_arguments(parser)
    parser.add_argument("--package", required=package_required, help="compiled pipeline YAML (bertpipe compile)")
    parser.add_argument("--experiment", default="bertpipe", help="KFP experiment (default: %(default)s)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a pipeline parameter; repeat for more")
    parser.add_argument("--service-account", help="Kubernetes service account of the run's pods")
    add_allow_local_storage(parser)


def add_allow_local_storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-local-storage", action="store_true",
                        help="accept a local artifact_root and tracking store (only for clusters whose pods all mount the same volume there)")


def _compile_flags(compile_: argparse.ArgumentParser) -> None:
    from pipelines.kubernetes import add_cluster_arguments

    compile_.add_argument("--output", default="bert-pretraining.yaml", help="YAML file to write (default: %(default)s)")
    compile_.add_argument("--artifact-root", default="", help="compile this artifact_root in as the default: s3://bucket/prefix (default: none, each run passes it)")
    compile_.add_argument("--tracking-uri", default="", help="compile this MLflow server in as the default tracking_uri (default: none, each run passes it)")
    add_allow_local_storage(compile_)
    add_cluster_arguments(compile_)
    compile_.set_defaults(handler=command_compile)


def _submit_flags(submit: argparse.ArgumentParser) -> None:
    add_submission_arguments(submit)
    submit.add_argument("--run-name", required=True, help="name of the run in the KFP UI")
    submit.set_defaults(handler=command_submit)


def _schedule_flags(schedule: argparse.ArgumentParser) -> None:
    schedule.add_argument("action", nargs="?", default="create", choices=["create", "list", "pause", "resume", "delete"], help="what to do (default: create)")
    schedule.add_argument("target", nargs="?", help="the schedule's name or id (pause, resume, delete)")
    add_submission_arguments(schedule, package_required=False)
    schedule.add_argument("--name", help="name of the new schedule")
    schedule.add_argument("--cron", help="6-field cron, seconds first: '0 0 3 * * 0' = Sundays 03:00")
    schedule.add_argument("--max-concurrency", type=int, default=1, help="runs of this schedule at once (default: %(default)s)")
    schedule.add_argument("--catchup", action="store_true", help="start the runs missed while paused (default: skip them)")
    schedule.set_defaults(handler=command_schedule)


def cluster_commands() -> list[tuple]:
    """(name, summary, description, add_flags) of compile, submit and schedule, for pipelines.cli.build_parser (their flags import kfp)."""
    return [
        ("compile", "compile the pipeline to KFP YAML for a cluster (images, GPUs, node pools, secrets)", None, _compile_flags),
        ("submit", "start a run of a compiled pipeline on a Kubeflow Pipelines endpoint", None, _submit_flags),
        ("schedule", "create, list, pause, resume or delete recurring runs",
         "Create a recurring run (default action), or manage existing ones by name or id.", _schedule_flags),
    ]
