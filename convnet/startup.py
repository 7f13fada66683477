"""Ctrl-C while a command starts: one line and exit 130, not a traceback.

A command run as `python -m convnet.X` imports this module first, before its
slow imports (NumPy, the readers), and calls guard(prog): until the command's
error path (convnet.cli.run) takes over SIGINT, a Ctrl-C prints
`prog: interrupted while starting; nothing done` and exits 130. Nothing has
been written at that point, so there is nothing to clean up. finish(code)
ends the command the same way: a Ctrl-C after the work is done changes
nothing. Only `os` and `signal` are imported here, both already loaded by
the interpreter itself.
"""
import os
import signal

EXIT_INTERRUPTED = 130


def guard(prog):
    def handler(signum, frame):
        os.write(2, f"{prog}: interrupted while starting; nothing done\n".encode())
        os._exit(EXIT_INTERRUPTED)
    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:              # not the main thread
        pass


def finish(code):
    """Exit with code once the command is done: Ctrl-C is ignored from here on (the
    interpreter's own shutdown would otherwise die of it, exit -2, after the work is done)."""
    import sys
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:
        pass
    sys.exit(code)
