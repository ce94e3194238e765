"""Keep kfp.local's interpreter swap out of the tasks' parameters.

kfp.local's SubprocessRunner (kfp 2.17) runs a task with this interpreter by replacing the
string "python3" in every element of the task's command line, the executor input JSON
included. A parameter naming a path such as `.venv/lib/python3.11/site-packages/...` then
reaches the task as `.venv/lib//…/.venv/bin/python3.11/site-packages/...`. The swap is
meant for the command (`sh -c '... python3 -m kfp.dsl.executor_main ...'`), which comes
before the `--executor_input` argument; this confines it there.
"""

from __future__ import annotations

import contextlib

EXECUTOR_INPUT_FLAG = "--executor_input"


@contextlib.contextmanager
def python_swap_in_command_only():
    """While inside, kfp.local rewrites "python3" only in the command, never in the executor input after it."""
    from kfp.local import subprocess_task_handler as handler

    original = handler.replace_python_executable

    def replace_in_command(full_command: list[str], new_executable: str) -> list[str]:
        end = full_command.index(EXECUTOR_INPUT_FLAG) if EXECUTOR_INPUT_FLAG in full_command else len(full_command)
        return original(full_command[:end], new_executable) + full_command[end:]

    handler.replace_python_executable = replace_in_command
    try:
        yield
    finally:
        handler.replace_python_executable = original
