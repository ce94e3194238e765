"""Evaluate the registry's champion on the new model's test data, so promotion compares like with like.

Registered metrics of an older champion were measured on an older test split;
only numbers from the same instances (fixed masks, same documents) can decide a
promotion by a small margin.
"""

from __future__ import annotations

import logging
import tempfile

from components.core.errors import BertpipeError
from components.evaluation.evaluate import evaluate
from components.registry.promotion import current_champion
from components.registry.register import download_model
from components.core.tracking import Tracking

log = logging.getLogger(__name__)


def evaluate_champion(registered_model_name: str, data_uris: dict[int, str], output_uri: str, *, tracking: Tracking) -> tuple[str | None, dict | None]:
    """(champion version, its metrics on data_uris), or (None, None) when there is no champion yet.

    A champion that cannot read this data (another vocab, say) gives (version,
    None): promotion then falls back to its registered metrics and says so.
    """
    version = current_champion(registered_model_name, tracking_uri=tracking.tracking_uri)
    if version is None:
        log.info("%s has no champion yet: the new version can only be compared with the promotion floor", registered_model_name)
        return None, None
    log.info("evaluating champion %s version %s on the same test data", registered_model_name, version)
    with tempfile.TemporaryDirectory(prefix="bertpipe-champion-") as tmp:
        folder = download_model(f"models:/{registered_model_name}/{version}", tmp, tracking_uri=tracking.tracking_uri)["folder"]
        try:
            return version, evaluate(folder, data_uris, output_uri)
        except BertpipeError as error:
            log.warning("champion version %s cannot be evaluated on this data (%s); its registered metrics will be used", version, error)
            return version, None
