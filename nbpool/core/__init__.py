"""The pool's bookkeeping: who holds which worker, who waits, what to start.

Inside:

- :mod:`.coordinator`: the :class:`~.coordinator.Coordinator`, the one lock,
  the contract (lease, affinity, growth, release, health; the lifecycle table).
- :mod:`.policy`: the rules, decided under that lock, returned as actions.
- :mod:`.records`: the records the rules read and write (``Worker``,
  ``Waiter``, ``Settings``) and the typed actions.
- :mod:`.runner`: carries the actions out, off the lock (starts, stops).
- :mod:`.monitor`: the coordinator's thread: heartbeats (``Heartbeats``) and timers.
- :mod:`.sessions`: the session registry clients read without the lock.
- :mod:`.lease`: a :class:`~.lease.Lease`, the client's handle on one worker.

Data flows one way: a client asks the coordinator for a lease; the policy
decides; the runner acts; the client then does its I/O on the lease's
worker (:mod:`nbpool.kernels.execution`), never through the coordinator.

May import: :mod:`nbpool.errors`, :mod:`nbpool.checks`, :mod:`nbpool.result`,
:mod:`nbpool.kernels`. Never the launcher, the pool, the notebook side or a feature.
"""
