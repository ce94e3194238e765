"""Submit runs and manage recurring runs (schedules) on a Kubeflow Pipelines endpoint.

Thin layer over `kfp.Client` that adds what the CLI needs: authentication from the
environment (never from flags), a 6-field cron check before anything is sent, schedules
addressed by name or id, and one-line BertpipeErrors for unreachable or refusing servers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kfp
import kfp_server_api
import urllib3

from components.core.errors import BertpipeError

logger = logging.getLogger(__name__)

TOKEN_ENV = "BERTPIPE_KFP_TOKEN"
COOKIE_ENV = "BERTPIPE_KFP_COOKIE"
HOST_ENV = "KF_PIPELINES_ENDPOINT"  # kfp.Client's own fallback for the host


# --- cron ------------------------------------------------------------------------------

_MONTHS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()
_WEEKDAYS = "SUN MON TUE WED THU FRI SAT".split()
# KFP's scheduler reads cron with seconds first (robfig/cron): name, low, high, names.
_CRON_FIELDS = (
    ("second", 0, 59, None),
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _WEEKDAYS),
)


def _cron_value(text: str, low: int, high: int, names: list[str] | None, field: str) -> int:
    if names and text.upper() in names:
        return names.index(text.upper()) + low
    if not text.isdigit():
        raise BertpipeError(f"cron {field} {text!r} is not a number{' or a name' if names else ''}")
    value = int(text)
    if not low <= value <= high:
        raise BertpipeError(f"cron {field} {value} is out of range {low}-{high}")
    return value


def _check_cron_field(text: str, field: str, low: int, high: int, names: list[str] | None) -> None:
    for part in text.split(","):
        span, slash, step = part.partition("/")
        if slash and (not step.isdigit() or int(step) == 0):
            raise BertpipeError(f"cron {field} step {step!r} must be a positive number")
        if span in ("*", "?"):
            if span == "?" and field not in ("day of month", "day of week"):
                raise BertpipeError(f"cron {field}: '?' is only allowed for day of month and day of week")
            continue
        start, dash, end = span.partition("-")
        first = _cron_value(start, low, high, names, field)
        if dash and _cron_value(end, low, high, names, field) < first:
            raise BertpipeError(f"cron {field} range {span!r} runs backwards")


def validate_cron(expression: str) -> str:
    """Check a KFP cron expression (6 fields, seconds first: the form KFP documents) and
    return it with single spaces; a 5-field crontab line gets a hint."""
    expression = " ".join(expression.split())
    fields = expression.split(" ")
    if len(fields) == 5:
        raise BertpipeError(
            f"cron {expression!r} has 5 fields; KFP wants 6 with seconds first, e.g. '0 {expression}'"
        )
    if len(fields) != 6:
        raise BertpipeError(
            f"cron {expression!r} has {len(fields)} fields; KFP wants 6: second minute hour "
            "day-of-month month day-of-week, e.g. '0 0 3 * * 0' for Sundays at 03:00"
        )
    for text, (field, low, high, names) in zip(fields, _CRON_FIELDS):
        _check_cron_field(text, field, low, high, names)
    return expression


# --- connecting --------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """How to reach KFP. host None: kfp.Client's own discovery (in-cluster, or the kube
    config's API server proxy, optionally a named kube_context)."""

    host: str | None = None
    namespace: str | None = None
    kube_context: str | None = None
    ssl_ca_cert: str | None = None


@contextlib.contextmanager
def api_errors(action: str, host: str | None) -> Iterator[None]:
    """Turn kfp client failures into one-line BertpipeErrors that say what to check."""
    where = host or "the KFP endpoint from the kube config"
    try:
        yield
    except kfp_server_api.ApiException as error:
        hint = " (check the token in $%s or the cookie in $%s)" % (TOKEN_ENV, COOKIE_ENV) if error.status in (401, 403) else ""
        raise BertpipeError(f"{action} failed: KFP at {where} answered {error.status} {error.reason}: "
                            f"{_server_message(error)}{hint}") from None
    except (urllib3.exceptions.HTTPError, OSError, TimeoutError) as error:
        raise BertpipeError(f"{action} failed: cannot reach KFP at {where} ({type(error).__name__}); "
                            "check --host, the port-forward or the kube config") from None


def _server_message(error: kfp_server_api.ApiException) -> str:
    body = error.body.decode() if isinstance(error.body, bytes) else str(error.body or "")
    match = re.search(r'"(?:message|error)"\s*:\s*"([^"]*)"', body)
    return (match.group(1) if match else body)[:300]


def connect(endpoint: Endpoint) -> kfp.Client:
    """A kfp.Client for the endpoint; a bearer token and a session cookie are read from
    $BERTPIPE_KFP_TOKEN and $BERTPIPE_KFP_COOKIE, never from the command line."""
    with api_errors("connecting", endpoint.host), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0-beta.2 and later"
        return kfp.Client(
            host=endpoint.host,
            namespace=endpoint.namespace or "kubeflow",
            existing_token=os.environ.get(TOKEN_ENV) or None,
            cookies=os.environ.get(COOKIE_ENV) or None,
            kube_context=endpoint.kube_context,
            ssl_ca_cert=endpoint.ssl_ca_cert,
        )


def _experiment_id(client: kfp.Client, experiment: str, namespace: str | None) -> str:
    return client.create_experiment(name=experiment, namespace=namespace).experiment_id


def _check_package(package_path: str | Path) -> str:
    path = Path(package_path)
    if not path.is_file():
        raise BertpipeError(f"pipeline package {path} does not exist; run `bertpipe compile` first")
    return str(path)


# --- runs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmittedRun:
    run_id: str
    experiment_id: str
    url: str


def submit(
    client: kfp.Client,
    package_path: str | Path,
    arguments: Mapping[str, Any],
    *,
    run_name: str,
    experiment: str = "bertpipe",
    namespace: str | None = None,
    service_account: str | None = None,
) -> SubmittedRun:
    """Create one run of a compiled pipeline package. Caching is left to the compiled
    per-task settings (kfp's run-wide enable_caching would override them)."""
    package = _check_package(package_path)
    with api_errors(f"submitting run {run_name!r}", client._existing_config.host):
        experiment_id = _experiment_id(client, experiment, namespace)
        run = client.run_pipeline(
            experiment_id=experiment_id, job_name=run_name, pipeline_package_path=package,
            params=dict(arguments), enable_caching=None, service_account=service_account,
        )
    url = f"{client._get_url_prefix()}/#/runs/details/{run.run_id}"
    logger.info("submitted run %s (%s) to experiment %s: %s", run_name, run.run_id, experiment, url)
    return SubmittedRun(run_id=run.run_id, experiment_id=experiment_id, url=url)


# --- schedules -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """A recurring run as the CLI shows it."""

    recurring_run_id: str
    name: str
    cron: str
    enabled: bool
    experiment_id: str | None

    @classmethod
    def from_api(cls, run: kfp_server_api.V2beta1RecurringRun) -> "Schedule":
        trigger = run.trigger
        if trigger and trigger.cron_schedule:
            cron = trigger.cron_schedule.cron
        elif trigger and trigger.periodic_schedule:
            cron = f"every {trigger.periodic_schedule.interval_second}s"
        else:
            cron = ""
        return cls(run.recurring_run_id, run.display_name or "", cron, run.mode == "ENABLE", run.experiment_id)


def create_schedule(
    client: kfp.Client,
    package_path: str | Path,
    arguments: Mapping[str, Any],
    *,
    name: str,
    cron: str,
    experiment: str = "bertpipe",
    namespace: str | None = None,
    max_concurrency: int = 1,
    catchup: bool = False,
    service_account: str | None = None,
) -> Schedule:
    """Create a recurring run. The cron expression is checked before anything is sent;
    no catch-up by default, so a paused schedule does not fire a burst of missed runs."""
    cron = validate_cron(cron)
    if not 1 <= max_concurrency <= 10:
        raise BertpipeError(f"--max-concurrency must be between 1 and 10 (KFP's limit), not {max_concurrency}")
    package = _check_package(package_path)
    with api_errors(f"creating schedule {name!r}", client._existing_config.host):
        experiment_id = _experiment_id(client, experiment, namespace)
        created = client.create_recurring_run(
            experiment_id=experiment_id, job_name=name, cron_expression=cron, max_concurrency=max_concurrency,
            no_catchup=not catchup, params=dict(arguments), pipeline_package_path=package,
            enable_caching=None, service_account=service_account,
        )
    logger.info("created schedule %s (%s): %s", name, created.recurring_run_id, cron)
    return Schedule.from_api(created)


def list_schedules(client: kfp.Client, namespace: str | None = None, page_size: int = 100) -> list[Schedule]:
    """All recurring runs (every page), oldest first."""
    schedules, token = [], ""
    with api_errors("listing schedules", client._existing_config.host):
        while True:
            page = client.list_recurring_runs(page_token=token, page_size=page_size, sort_by="created_at",
                                              namespace=namespace)
            schedules += [Schedule.from_api(run) for run in page.recurring_runs or []]
            token = page.next_page_token or ""
            if not token:
                return schedules


def find_schedule(client: kfp.Client, name_or_id: str, namespace: str | None = None) -> Schedule:
    """The one schedule whose id or name is ``name_or_id``."""
    schedules = list_schedules(client, namespace)
    by_id = [s for s in schedules if s.recurring_run_id == name_or_id]
    matches = by_id or [s for s in schedules if s.name == name_or_id]
    if not matches:
        raise BertpipeError(f"no schedule named or with id {name_or_id!r}; `bertpipe schedule list` shows them")
    if len(matches) > 1:
        ids = ", ".join(s.recurring_run_id for s in matches)
        raise BertpipeError(f"{len(matches)} schedules are named {name_or_id!r} ({ids}); give the id instead")
    return matches[0]


def _change_schedule(client: kfp.Client, name_or_id: str, namespace: str | None, verb: str, call, enabled: bool | None = None) -> Schedule:
    """Apply `call` to the schedule; returns it as it is afterwards (`enabled`: its new state, None: unchanged)."""
    schedule = find_schedule(client, name_or_id, namespace)
    with api_errors(f"{verb} schedule {name_or_id!r}", client._existing_config.host):
        call(schedule.recurring_run_id)
    logger.info("%s schedule %s (%s)", verb, schedule.name, schedule.recurring_run_id)
    return schedule if enabled is None else dataclasses.replace(schedule, enabled=enabled)


def pause_schedule(client: kfp.Client, name_or_id: str, namespace: str | None = None) -> Schedule:
    """Stop a schedule from starting runs (KFP: disable the recurring run)."""
    return _change_schedule(client, name_or_id, namespace, "pausing", client.disable_recurring_run, enabled=False)


def resume_schedule(client: kfp.Client, name_or_id: str, namespace: str | None = None) -> Schedule:
    return _change_schedule(client, name_or_id, namespace, "resuming", client.enable_recurring_run, enabled=True)


def delete_schedule(client: kfp.Client, name_or_id: str, namespace: str | None = None) -> Schedule:
    return _change_schedule(client, name_or_id, namespace, "deleting", client.delete_recurring_run)


# --- the CLI's knobs -------------------------------------------------------------------------


def add_endpoint_arguments(parser) -> None:
    """Flags that say where KFP is (`bertpipe submit` and `bertpipe schedule ...`)."""
    group = parser.add_argument_group(
        "KFP endpoint", f"credentials come from ${TOKEN_ENV} (bearer token) or ${COOKIE_ENV} (session cookie)")
    group.add_argument("--host", default=os.environ.get(HOST_ENV),
                       help=f"KFP API URL, e.g. http://localhost:8080 after a port-forward (default: ${HOST_ENV}; "
                            "none: in-cluster config or the kube config's API server proxy)")
    group.add_argument("--namespace", help="Kubernetes namespace of a multi-user Kubeflow (default: the client's)")
    group.add_argument("--kube-context", help="kube config context to use when --host is not given")
    group.add_argument("--ssl-ca-cert", help="CA bundle for an https --host with a private CA")


def endpoint_from_args(args) -> Endpoint:
    return Endpoint(host=args.host, namespace=args.namespace, kube_context=args.kube_context,
                    ssl_ca_cert=args.ssl_ca_cert)
