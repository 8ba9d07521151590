"""The fork server of the Python-CLI fuzz cases: imports `edgesdk.cli` once, then forks one child per request.

Protocol (one JSON object a line on stdin, replies on stdout): a request {argv, cwd, env, stdout, stderr, memory}
is answered with the child's pid on one line as soon as it is forked, then {"code": int|null, "signal": int|null}
when it ends. The parent kills the child's process group (each child starts a session) when it runs too long.

A child behaves like a fresh `python -m edgesdk.cli ARGV`: its own cwd, environment, stdio files and address-space
limit; tempfile's cached folder and the environment are reset before the command runs; an uncaught exception
prints its traceback and exits 1, as the interpreter would. Nothing imported here starts a thread (a fork would
copy a lock held by one); tests/test_fuzz.py compares a few cases with a real subprocess.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import traceback


def _child(request: dict) -> None:
    import edgesdk.cli

    os.setsid()
    resource.setrlimit(resource.RLIMIT_AS, (request["memory"], request["memory"]))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
    os.dup2(os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # gettempdir() caches; the case's TMPDIR must count
    sys.argv = ["edgesdk", *request["argv"]]
    code = 0
    try:
        edgesdk.cli.main()
    except SystemExit as exit_:
        if exit_.code is None:
            code = 0
        elif isinstance(exit_.code, int):
            code = exit_.code
        else:
            print(exit_.code, file=sys.stderr)
            code = 1
    except BaseException:  # what the interpreter does with an exception nobody caught
        traceback.print_exc()
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        code = code or 120  # as the interpreter exits when flushing stdout fails at shutdown
    os._exit(code)


# What the commands import lazily: imported once here, so that a case pays for its command, not for the imports
# (~0.3 s). Not onnxruntime, whose import starts a thread.
PRELOAD = ("typer._adapters", "numpy", "PIL.Image", "PIL.PngImagePlugin", "rich.progress", "safetensors.numpy",
           "edgesdk.progress", "edgesdk.runtime.bundle", "edgesdk.runtime.tasks", "edgesdk.runtime.pipeline",
           "edgesdk.runtime.personalize", "edgesdk.runtime.generic", "edgesdk.runtime.classify",
           "edgesdk.runtime.video", "edgesdk.runtime.restore", "edgesdk.runtime.image", "edgesdk.runtime.zo",
           "edgesdk.runtime.onebit")


def main() -> None:
    import importlib

    import edgesdk.cli  # noqa: F401  (imported once, before any fork)

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # a module a later version renamed: the case imports what it needs itself

    out = sys.stdout.buffer
    out.write(b"ready\n")
    out.flush()
    for line in sys.stdin.buffer:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                _child(request)
            finally:
                os._exit(1)
        out.write(f"{pid}\n".encode())
        out.flush()
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            reply = {"code": None, "signal": os.WTERMSIG(status)}
        else:
            reply = {"code": os.WEXITSTATUS(status), "signal": None}
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
