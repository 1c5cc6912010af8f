"""The IPython magics: ``%pool``, ``%%pool_exec``, ``%pool_push``, ``%pool_pull``.

Thin: each magic parses its arguments (IPython's ``magic_arguments``, so
``%%pool_exec?`` shows the help), validates them, delegates to the pool,
:mod:`nbpool.notebook.forwarding`, :mod:`nbpool.notebook.broadcast` or
:mod:`nbpool.notebook.transfer`, and turns bad input into a one-line
:class:`~IPython.core.error.UsageError`. Options that several magics share
are declared once, as argument groups (:func:`session_args`,
:func:`output_args`); ``%pool ACTION`` runs the handler that
:attr:`PoolMagics.ACTIONS` names for it.

The pool is created from the shell's configuration, so ``c.Pool.size = 8``
in ``ipython_config.py`` and ``%config Pool.size = 8`` both apply to the
next pool created. It is created (and its workers started) by
``%pool start``, or lazily by the first magic that needs it; ``%pool stop``
shuts it down and the next use creates a fresh one.

Magics
------
(This part is the magics' own help, as ``%pool?`` shows it.)

{magics}

Examples
--------
::

    %load_ext nbpool
    %pool start -n 4

    %%pool_exec -s etl
    import pandas as pd
    df = pd.read_csv("big.csv")      # df lives on session etl's worker

    %%pool_exec --all                # every live session, one block each
    print(len(df))

    %%pool_exec -s train --bg -o job
    fit()                            # output keeps arriving in this cell (job 3)

    job.result()                     # the ExecutionResult, once done
    %pool jobs                       # this kernel's %%pool_exec runs
    %pool reattach 3                 # job 3's output so far here, then live
    %pool_push params -s train       # notebook -> session
    %pool_pull model -s train        # session -> notebook
    %pool widget
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.core.magic_arguments import parse_argstring as _parse_argstring
from IPython.display import display
from traitlets import Int

from .. import checks, render
from ..checks import DEFAULT_SESSION
from ..errors import InvalidConfig, NbpoolError, TransferError, UnknownKernel
from ..launcher import check_kernel_name
from ..pool import Pool
from . import broadcast, completion, forwarding, jobs, labcomm, transfer

# -- argument groups -----------------------------------------------------------
# Options several magics share, as decorators (ipyparallel's `exec_args` /
# `output_args`): declared once with one help text, and each value checked in
# one place. An `argument` is itself a decorator, so a one-option group is one.


def parse_argstring(magic, line: str):
    """IPython's ``parse_argstring``, with an unclosed quote a one-line UsageError
    (shlex raises a bare ValueError for ``-s 'x``)."""
    try:
        return _parse_argstring(magic, line)
    except ValueError as exc:
        raise UsageError(f"cannot read the options {line.strip()!r}: {exc}") from None


def _variable_name(text: str) -> str:
    """``-o``'s value: a Python identifier (argparse turns the error into a UsageError)."""
    if not text.isidentifier():
        raise argparse.ArgumentTypeError(f"needs a variable name, got {text!r}")
    return text


#: ``-s/--session SESSION``: the session a magic works on; :func:`_session`
#: reads it (quotes stripped, name checked), unset is the pool's default session.
session_args = argument(
    "-s",
    "--session",
    metavar="SESSION",
    help="The session (default: the pool's default session); quotes around it are stripped.",
)

#: ``-o/--output NAME``: store what the magic gives back as the notebook
#: variable NAME (checked to be an identifier while parsing); see
#: :meth:`PoolMagics._store`.
output_args = argument(
    "-o",
    "--output",
    metavar="NAME",
    type=_variable_name,
    help="Store the result (or the --bg handle) as the notebook variable NAME.",
)


def _listing(actions: dict, arguments: dict[str, str]):
    """A decorator filling a magic docstring's ``{actions}``: one line per action, from
    its handler's docstring, so an action's help is written once, beside its code."""

    def fill(magic):
        usages = {a: f"{a} {arguments[a]}" if a in arguments else a for a in actions}
        width = max(map(len, usages.values())) + 2
        lines = [f"{usages[a]:<{width}}{h.__doc__.splitlines()[0]}" for a, h in actions.items()]
        # Indented like the docstring's body plus two, so IPython's dedent keeps the list a list.
        magic.__doc__ = magic.__doc__.format(actions=("\n" + " " * 10).join(lines))
        return magic

    return fill


@magics_class
class PoolMagics(Magics):
    """The nbpool magics; one pool per shell (see the module docstring)."""

    job_output_limit = Int(
        jobs.OUTPUT_LIMIT,
        min=0,
        help="Bytes of output a --bg job keeps for reattaching, and characters of stream "
        "text a %%pool_exec result keeps (the oldest go first).",
    ).tag(config=True)
    jobs_kept = Int(
        jobs.JOBS_KEPT, min=1, help="How many of the latest %%pool_exec jobs this kernel keeps."
    ).tag(config=True)

    def __init__(self, shell) -> None:
        super().__init__(shell)
        self._pool: Pool | None = None
        self._told: set[str] = set()  # sessions told about their journaled output
        #: Every %%pool_exec run of this kernel, kept until it exits (%pool jobs).
        self.jobs = jobs.Jobs(self.jobs_kept)

    def get_pool(self) -> Pool | None:
        """The current pool, or None when none was created (or it was stopped or
        detached, here or from the JupyterLab panel)."""
        if self._pool is not None and self._pool.closed:
            self._pool = None
        return self._pool

    def shutdown(self) -> None:
        """Shut the pool down (``%unload_ext nbpool``); idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown()

    def _ensure_pool(self, **overrides) -> Pool:
        if self.get_pool() is None:
            with _one_line():
                self._pool = Pool(parent=self.shell, **overrides)
        return self._pool

    def _store(self, name: str | None, value) -> None:
        """``-o NAME`` (see :data:`output_args`): ``value`` becomes the notebook's ``NAME``."""
        if name is not None:
            self.shell.user_ns[name] = value

    # -- %pool ACTION: one handler per action, the table ACTIONS below ---------

    def _pool_start(self, args) -> None:
        """Start the workers; wait until they are ready."""
        options = {
            "size": args.size,
            "kernel_name": args.kernel,
            "preload": _unquote(args.preload),
            "name": _unquote(args.name),
            "keep_sessions": True if args.keep else None,
        }
        overrides = {k: v for k, v in options.items() if v is not None}
        pool = self._pool
        if pool is not None:
            wanted = {k: v for k, v in overrides.items() if getattr(pool, k) != v}
            if wanted:
                changes = ", ".join(f"{k}={v!r}" for k, v in wanted.items())
                raise UsageError(
                    f"the pool is already running with size={pool.size}, "
                    f"kernel_name={pool.kernel_name!r}; `%pool stop` first to start it with {changes}"
                )
        pool = self._ensure_pool(**overrides)
        with _one_line():
            pool.start(wait=True)
        print(f"nbpool: {pool.status().summary()} ({pool.size} x {pool.kernel_name})")
        if pool.keep_sessions:
            print(readopted_text(pool))

    def _pool_status(self, args) -> None:
        """Show the workers and counters."""
        if self._pool is None:
            print("nbpool: no pool yet; `%pool start` or a %%pool_exec cell starts one")
            return
        display(self._pool.status())

    def _pool_stop(self, args) -> None:
        """Shut the pool down (the next magic that needs one starts a new one)."""
        if self._pool is None:
            print("nbpool: no pool to stop")
            return
        workers = len(self._pool.status()["workers"])
        self._told.clear()
        self.shutdown()
        print(f"nbpool: stopped the pool ({workers} worker(s))")

    def _pool_widget(self, args):
        """A live status widget."""
        return self._ensure_pool().widget()

    def _pool_sessions(self, args) -> None:
        """Show the sessions."""
        if self._pool is None:
            print("nbpool: no pool yet, so no sessions")
            return
        status = self._pool.status()
        display(
            {"text/plain": status.sessions_table(), "text/html": render.sessions_html(status)},
            raw=True,
        )

    def _pool_end(self, args) -> None:
        """End the session; its worker is replaced by a fresh one."""
        if args.session is None:
            raise UsageError("%pool end needs a SESSION name (see `%pool sessions`)")
        session = _session(args.session)
        if self._pool is None or not self._pool.end_session(session):
            known = [s["name"] for s in self._pool.status()["sessions"]] if self._pool else []
            raise UsageError(
                f"no session named {session!r} (sessions: {', '.join(known) or 'none'})"
            )
        print(f"nbpool: ended session {session!r}; its worker is replaced by a fresh one")

    def _pool_detach(self, args) -> None:
        """Close this pool, leave its kept sessions running (``start --keep``)."""
        if self._pool is None:
            print("nbpool: no pool to detach")
            return
        pool = self._pool
        with _one_line():
            pool.detach()
        self._pool = None
        kept = sum(1 for s in pool.status()["sessions"] if s["kept"])
        print(
            f"nbpool: detached pool {pool.name!r}: {kept} session(s) keep running for up to "
            f"{pool.keep_for:g} s; `%pool start --keep --name {_quoted(pool.name)}` re-adopts them"
        )

    def _pool_replay(self, args) -> None:
        """Show what the kept session printed while no pool was attached."""
        if args.session is None:
            raise UsageError("%pool replay needs a SESSION name (see `%pool sessions`)")
        session = _session(args.session)
        if self._pool is None or not self._pool.keep_sessions:
            raise UsageError("%pool replay is for kept sessions: `%pool start --keep` first")
        with _one_line():
            outputs = self._pool.replay(session)
        self._told.add(session)
        if not outputs:
            print(f"nbpool: no output of session {session!r} is waiting")
            return
        forward = forwarding.Forwarder(session, background=True)
        for out in outputs:
            forward(out)

    def _pool_jobs(self, args) -> None:
        """List this kernel's %%pool_exec runs (job, session, state, output size)."""
        status = self._pool.status() if self.get_pool() is not None else None
        print(self.jobs.table(status))

    def _pool_reattach(self, args) -> None:
        """Show a --bg job's output so far here, then the rest live (Ctrl-C stops following)."""
        text = args.session or ""
        if not text.strip().isdigit():
            raise UsageError(f"%pool reattach needs a JOB number (see `%pool jobs`), got {text!r}")
        try:
            job = self.jobs.get(int(text))
        except KeyError as exc:
            raise UsageError(exc.args[0]) from None
        if job.record is None:
            raise UsageError(
                f"job {job.number} ran in the foreground: its output is in its own cell; "
                "only --bg jobs can be reattached"
            )
        forwarding.reattach(job)

    #: ``%pool ACTION`` -> its handler: the choices, the dispatch and the help
    #: of ``%pool`` all come from this table (a handler's docstring is its help).
    ACTIONS = {
        "start": _pool_start,
        "status": _pool_status,
        "stop": _pool_stop,
        "widget": _pool_widget,
        "sessions": _pool_sessions,
        "end": _pool_end,
        "detach": _pool_detach,
        "replay": _pool_replay,
        "jobs": _pool_jobs,
        "reattach": _pool_reattach,
    }
    #: The actions that take an argument, and what it names.
    ARGUMENTS = {"end": "SESSION", "replay": "SESSION", "reattach": "JOB"}

    @magic_arguments()
    @argument("action", choices=ACTIONS, help="What to do (see above).")
    @argument(
        "session",
        nargs="?",
        help="The session to end or replay (`%%pool end SESSION`, `%%pool replay SESSION`), "
        "or the job to reattach to (`%%pool reattach JOB`).",
    )
    @argument("-n", "--size", type=int, help="Workers to start (`start` only).")
    @argument("--kernel", help="Kernelspec of the workers (`start` only).")
    @argument(
        "--preload",
        metavar="CODE",
        help="Code every new python worker runs before it is ready, e.g. "
        '"import pandas as pd" (`start` only).',
    )
    @argument("--name", help="The pool's name: kept sessions are found by it (`start` only).")
    @argument(
        "--keep",
        action="store_true",
        help="Keep the sessions when this kernel restarts, exits or crashes; re-adopt kept "
        "ones (`start` only).",
    )
    @_listing(ACTIONS, ARGUMENTS)
    @line_magic
    def pool(self, line: str):
        """Manage the pool of worker kernels: ``%pool ACTION``, one of

          {actions}

        With ``start --keep`` the sessions outlive this kernel: ``detach``
        leaves them running, a later ``start --keep`` (same ``--name``)
        re-adopts them, and ``replay SESSION`` shows what one printed meanwhile.
        """
        args = parse_argstring(self.pool, line)
        if args.action not in self.ARGUMENTS and args.session is not None:
            raise UsageError(f"%pool {args.action} takes no argument")
        start_only = (args.size, args.kernel, args.preload, args.name)
        if args.action != "start" and (start_only != (None,) * 4 or args.keep):
            raise UsageError(
                "-n/--size, --kernel, --preload, --name and --keep apply to `%pool start` only"
            )
        return self.ACTIONS[args.action](self, args)

    # -- %%pool_exec -----------------------------------------------------------

    @magic_arguments("%pool_exec")  # a cell magic: its usage line shows %%pool_exec
    @session_args
    @argument(
        "-t", "--timeout", type=float, help="Seconds the code may run; then it is interrupted."
    )
    @argument("--bg", action="store_true", help="Run in the background; the cell returns at once.")
    @output_args
    @argument("--kernel", metavar="NAME", help="Kernelspec for a new session.")
    @argument(
        "--all",
        action="store_true",
        help="Run on every live session (or on the sessions of -s a,b) in parallel; "
        "one labelled block of output each.",
    )
    @cell_magic
    def pool_exec(self, line: str, cell: str):
        """Run the cell on a worker kernel, with its output shown here, live.

        The session's variables persist on its worker between cells. A remote
        exception fails this cell. With ``--bg`` the cell returns at once
        with a handle (``-o NAME`` stores it: ``.result()``, ``.done()``,
        ``.cancel()``); the output keeps arriving in this cell.
        """
        args = parse_argstring(self.pool_exec, line)
        if args.timeout is not None:
            with _one_line():
                checks.timeout(args.timeout, "-t/--timeout", allow_none=False)
        if args.all:
            return self._pool_exec_all(args, cell)
        session = _session(args.session)
        with _one_line():
            if args.kernel is not None:
                check_kernel_name(args.kernel)
        pool = self._ensure_pool()
        if pool.keep_sessions and session not in self._told:
            self._told.add(session)
            count, size = pool.waiting_output(session)
            if count:
                print(
                    f"nbpool: session {session!r} printed {count} output(s) ({size / 1024:.1f} kB) "
                    f"while no pool was attached: `%pool replay {session}` shows them",
                    file=sys.stderr,
                    flush=True,
                )
        job = self.jobs.new(
            session,
            background=args.bg,
            parent=_parent(self.shell),
            limit=self.job_output_limit,
            keep=self.jobs_kept,
        )
        # One bound for the job's record and the execution's result.
        options = dict(
            session=session,
            timeout=args.timeout,
            kernel=args.kernel,
            job=job,
            output_limit=self.job_output_limit,
        )
        with _one_line():
            if args.bg:
                kept, value = forwarding.run_background(pool, cell, **options), None
            else:
                kept, value = forwarding.run_foreground(pool, cell, **options)
        self._store(args.output, kept)
        return value

    def _pool_exec_all(self, args, cell: str):
        if args.bg or args.kernel is not None:
            raise UsageError(
                "--all runs in the foreground on existing sessions: drop --bg/--kernel"
            )
        pool = self._ensure_pool()
        if args.session is not None:
            sessions = [_session(s) for s in _unquote(args.session).split(",") if s.strip()]
        else:
            sessions = broadcast.live_sessions(pool)
        if not sessions:
            raise UsageError(
                "--all: no live sessions; start one with %%pool_exec -s NAME, or name them "
                "with --all -s a,b"
            )
        with _one_line():
            ended = broadcast.run_all(pool, cell, list(dict.fromkeys(sessions)), args.timeout)
        self._store(args.output, ended)

    # -- %pool_push / %pool_pull -----------------------------------------------

    @magic_arguments()
    @argument("names", nargs="+", metavar="NAME", help="Notebook variables to copy.")
    @session_args
    @line_magic
    def pool_push(self, line: str) -> None:
        """Copy notebook variables into a session's namespace (pickled)."""
        args = parse_argstring(self.pool_push, line)
        session = _session(args.session)
        with _one_line():
            transfer.push(self._ensure_pool(), self.shell.user_ns, args.names, session)

    @magic_arguments()
    @argument("names", nargs="+", metavar="NAME", help="Session variables to copy.")
    @session_args
    @line_magic
    def pool_pull(self, line: str) -> None:
        """Copy variables from a session's namespace into the notebook (pickled)."""
        args = parse_argstring(self.pool_pull, line)
        session = _session(args.session)
        with _one_line():
            self.shell.user_ns.update(transfer.pull(self._ensure_pool(), args.names, session))


def _parent(shell) -> dict | None:
    """The request running this cell (its cell id, its client), if in a kernel."""
    kernel = getattr(shell, "kernel", None)
    return kernel.get_parent() if kernel is not None else None


def _session(name: str | None) -> str:
    """The session a magic names: what the user typed, without its quotes.

    IPython's argument splitting keeps quotes (``-s 'a b'`` arrives as
    ``"'a b'"``), so matching surrounding quotes and whitespace are stripped
    before the name is checked like any session name.
    """
    if name is None:
        return DEFAULT_SESSION
    name = _unquote(name)
    try:
        return checks.session_name(name)
    except InvalidConfig as exc:
        raise UsageError(f"-s/--session: {exc}") from None


def cell_session(line: str) -> str | None:
    """The one session a ``%%pool_exec`` cell runs on, from its magic line.

    ``line`` is what follows ``%%pool_exec``, parsed by the magic's own
    parser: ``-s NAME`` or, without it, the default session. None for
    ``--all`` (no single session) and for a line the magic would refuse.
    """
    try:
        args = parse_argstring(PoolMagics.pool_exec, line)
        return None if args.all else _session(args.session)
    except UsageError:
        return None


def readopted_text(pool: Pool) -> str:
    """What ``%pool start --keep`` says about the kept sessions it found."""
    found = pool.readopted
    if not found:
        return f"nbpool: pool {pool.name!r} keeps its sessions; none were waiting to be re-adopted"
    parts = []
    for s in found:
        if s["intact"]:
            text = f"{s['session']} (state intact"
            if s["waiting"]:
                text += (
                    f"; {s['waiting']} output(s), {s['bytes'] / 1024:.1f} kB, printed meanwhile: "
                    f"%pool replay {s['session']}"
                )
            parts.append(text + ")")
        else:
            parts.append(f"{s['session']} (state lost: {s['reason']})")
    return f"nbpool: re-adopted {len(found)} kept session(s) of pool {pool.name!r}: " + ", ".join(
        parts
    )


def _quoted(name: str) -> str:
    return name if name.replace("-", "").replace("_", "").replace(".", "").isalnum() else repr(name)


def _unquote(text: str | None) -> str | None:
    """``text`` without surrounding whitespace and matching quotes (which IPython keeps)."""
    if text is None:
        return None
    text = text.strip()
    while len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1].strip()
    return text


@contextmanager
def _one_line():
    """Pool errors as one line: bad settings as UsageError, the rest fail the cell."""
    try:
        yield
    except (InvalidConfig, UnknownKernel, TransferError) as exc:
        raise UsageError(str(exc)) from None
    except NbpoolError as exc:
        raise forwarding.short_error(exc) from None


def load_ipython_extension(shell) -> None:
    """``%load_ext nbpool``: the magics, the status comm for JupyterLab, and completion
    of session cells from their worker (idempotent)."""
    if _magics(shell) is None:
        magics = PoolMagics(shell)
        shell.register_magics(magics)
        labcomm.register(shell, magics.get_pool, magics.jobs)
        completion.install(shell, magics.get_pool, cell_session)


def unload_ipython_extension(shell) -> None:
    """``%unload_ext nbpool``: shut the pool down, remove the magics, the comm and the
    completion hooks."""
    magics = _magics(shell)
    if magics is None:
        return
    completion.uninstall(shell)
    labcomm.unregister(shell)
    magics.shutdown()
    for kind, names in magics.magics.items():
        for name in names:
            shell.magics_manager.magics[kind].pop(name, None)
    shell.magics_manager.registry.pop(type(magics).__name__, None)


def _magics(shell) -> PoolMagics | None:
    return shell.magics_manager.registry.get(PoolMagics.__name__)


# The module's help is the magics' own (ipyparallel's magics do the same).
__doc__ = __doc__.format(
    magics="\n\n".join(
        getattr(PoolMagics, name).__doc__.strip()
        for name in ("pool", "pool_exec", "pool_push", "pool_pull")
    )
)
