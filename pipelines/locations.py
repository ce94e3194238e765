"""Where a cluster run writes: refuse laptop locations before a pipeline reaches a cluster.

On Kubernetes every task is its own pod with its own filesystem: a local artifact
folder or a sqlite MLflow store would be a throw-away copy per pod (every run
registers "version 1" and becomes champion; no step finds its input). `compile`,
`submit` and `schedule` check the two locations a run needs, from the --param values
or the defaults compiled into the package, unless the user says the pods share a
volume (--allow-local-storage).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from components.core.errors import BertpipeError

LOCATIONS = ("artifact_root", "tracking_uri")
SHARED_VOLUME_HINT = "or --allow-local-storage if every pod mounts the same volume there"


def _artifact_root_problem(value: str) -> str | None:
    if not value:
        return "artifact_root is not set: pass --param artifact_root=s3://bucket/prefix (or compile with --artifact-root)"
    if not value.startswith("s3://"):
        return f"artifact_root={value!r} is a local folder, private to each pod: use s3://bucket/prefix ({SHARED_VOLUME_HINT})"
    return None


def _tracking_uri_problem(value: str) -> str | None:
    if not value:
        return "tracking_uri is not set: pass --param tracking_uri=http://mlflow.example:5000 (or compile with --tracking-uri)"
    if not value.startswith(("http://", "https://", "databricks")):
        return (f"tracking_uri={value!r} is a store inside each pod (runs and the registry would be lost with it): "
                f"use an MLflow server, http(s)://host:port ({SHARED_VOLUME_HINT})")
    return None


def location_problems(arguments: Mapping[str, Any]) -> list[str]:
    """What is wrong with a cluster run's artifact_root and tracking_uri (empty: nothing)."""
    found = [_artifact_root_problem(str(arguments.get("artifact_root") or "")),
             _tracking_uri_problem(str(arguments.get("tracking_uri") or ""))]
    return [problem for problem in found if problem]


def check_cluster_locations(arguments: Mapping[str, Any], *, allow_local: bool, action: str) -> None:
    """Raise one BertpipeError listing the location problems of a cluster run."""
    found = location_problems(arguments)
    if allow_local:
        found = [problem for problem in found if "is not set" in problem]
    if found:
        raise BertpipeError(f"{action}: " + "; ".join(found))


def package_defaults(package_path: str) -> dict[str, Any]:
    """The parameter defaults compiled into a pipeline package."""
    with open(package_path, encoding="utf-8") as handle:
        spec = next(yaml.safe_load_all(handle))
    parameters = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return {name: entry["defaultValue"] for name, entry in parameters.items() if "defaultValue" in entry}
