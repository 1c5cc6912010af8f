"""Sessions that outlive the notebook kernel (``keep_sessions=True``).

Inside:

- :mod:`.store`: the owner-only records, the per-pool lock and the journals
  on disk; starts the keeper.
- :mod:`.adoption`: the pool side (``Keeping``): writes records as sessions
  bind, re-adopts kept sessions at ``start()``, detaches, replays.
- :mod:`.kernel`: ``KeptKernel``, the handle of a re-adopted kernel.
- :mod:`._keeper`: the keeper program, which journals kept sessions' output
  while no pool is attached and ends them after ``keep_for``.

May import :mod:`nbpool.errors`, :mod:`nbpool.checks`, :mod:`nbpool.kernels`.
"""
