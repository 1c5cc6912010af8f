"""Data-parallel work: ``Pool.map`` and ``Pool.imap``.

Inside:

- :mod:`.run`: ``MapRun``, one map: chunks on session-free task leases,
  failures, retries, cancellation.
- :mod:`.wire`: the task wire format (cloudpickle frames) and the
  worker-side runner's source.
- :mod:`.progress`: the progress bar in notebooks (a line elsewhere).

May import :mod:`nbpool.core`, :mod:`nbpool.errors`, :mod:`nbpool.checks`, :mod:`nbpool.result`.
"""
