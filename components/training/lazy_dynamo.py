"""torch's optimizers without importing torch._dynamo until something compiles.

Optimizer.add_param_group, zero_grad, state_dict and load_state_dict are wrapped in
torch._disable_dynamo, and Adam(W).step in a wrapper that calls torch._dynamo.graph_break;
both import torch._dynamo (and with it sympy, pandas and torch.distributed's tensor package)
on the first call: 1.5-5 s of a 2-core machine before the first training step, about as long
as importing torch itself. Both wrappers only matter while dynamo traces the call, and dynamo
traces nothing before it is imported; so until torch._dynamo is in sys.modules these methods
run as they are (step under no_grad, as the wrapper sets it), and from then on through torch's
wrappers as torch meant (torch_compile=True imports dynamo when it compiles, in compile_model).
"""

from __future__ import annotations

import functools
import inspect
import sys

import torch

from components.core.grouped_attention import InstanceGroups

try:
    from torch.optim.optimizer import _use_grad_for_differentiable
except ImportError:  # a torch whose internals moved: its own AdamW below (dynamo then loads at the first step, only slower)
    _use_grad_for_differentiable = None

_WRAPPED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")
_CACHE = "__dynamo_disable"  # where torch._compile._disable_dynamo keeps the disabled function


def _defer(function):
    """What torch's wrapper calls instead of torch._dynamo.disable(function): the function itself until dynamo is loaded."""

    def call(*args, **kwargs):
        if "torch._dynamo" not in sys.modules:
            return function(*args, **kwargs)
        disabled = sys.modules["torch._dynamo"].disable(function, recursive=True, wrapping=False)
        setattr(function, _CACHE, disabled)
        return disabled(*args, **kwargs)

    return call


def defer_dynamo_import() -> None:
    """Let the optimizer methods run without importing torch._dynamo (once per process; a no-op where torch wraps them otherwise)."""
    for name in _WRAPPED:
        function = getattr(getattr(torch.optim.Optimizer, name), "__wrapped__", None)
        if function is not None and "torch._dynamo" not in sys.modules and not hasattr(function, _CACHE):
            setattr(function, _CACHE, _defer(function))


def _step_without_dynamo(step):
    """Adam's step without its dynamo wrapper until dynamo is loaded (then with it)."""
    plain = inspect.unwrap(step)
    guarded = _use_grad_for_differentiable(plain)

    @functools.wraps(plain)
    def call(self, *args, **kwargs):
        if "torch._dynamo" in sys.modules:
            return guarded(self, *args, **kwargs)
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return plain(self, *args, **kwargs)

    return call


if _use_grad_for_differentiable is None:
    AdamW = torch.optim.AdamW
else:
    class AdamW(torch.optim.AdamW):
        """torch's AdamW, whose step imports torch._dynamo only once something else has."""

        step = _step_without_dynamo(torch.optim.AdamW.step)


def compile_model(module, **options):
    """torch.compile(module), with a packed batch's per-instance attention run eagerly between its graphs: how many
    groups of which widths a batch has changes with every batch, and traced it would make a new graph at every step."""
    for name in ("__init__", "attend"):
        method = getattr(InstanceGroups, name)
        if not getattr(method, "_torchdynamo_disable", False):
            setattr(InstanceGroups, name, torch.compiler.disable(method))
    return torch.compile(module, **options)
