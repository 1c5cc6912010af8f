"""Data-parallel work: ``Pool.map`` and ``Pool.imap``.

Inside:

- :mod:`.run`: ``MapRun``, one map: chunks on session-free task leases,
  failures, retries, cancellation.
- :mod:`.wire`: the task wire format (a private shell request and its reply,
  cloudpickle frames) and the source of the worker-side runner, a shell
  handler that skips ``run_cell``.
- :mod:`.progress`: the progress bar in notebooks (a line elsewhere).

May import :mod:`nbpool.core`, :mod:`nbpool.errors`, :mod:`nbpool.checks`, :mod:`nbpool.result`.
"""
