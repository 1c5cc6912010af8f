"""The pool's bookkeeping: who holds which worker, who waits, what to start.

Inside:

- :mod:`.coordinator`: the :class:`~.coordinator.Coordinator`, the one lock,
  the contract (lease, affinity, growth, release, health; the lifecycle table).
  It owns a policy, a runner and a monitor, and makes the leases.
- :mod:`.policy`: the :class:`~.policy.Policy`, a plain value: the pool's
  state and the rules, called under that lock, returning actions.
- :mod:`.records`: the records the rules read and write (``Worker``,
  ``Waiter``, the frozen ``Settings``) and the typed actions (``Grant``,
  ``Refuse``, ``Start``, ``Stop``...).
- :mod:`.runner`: carries the actions out, off the lock (starts, stops).
- :mod:`.monitor`: the coordinator's thread: heartbeats (``Heartbeats``) and timers.
- :mod:`.sessions`: the session registry clients read without the lock.
- :mod:`.lease`: a :class:`~.lease.Lease`, the client's handle on one worker.

Data flows one way: a client asks the coordinator for a lease; the policy
decides and returns actions; the coordinator turns a ``Grant`` into a lease;
the runner acts on the rest; the client then does its I/O on the lease's
worker (:mod:`nbpool.kernels.execution`), never through the coordinator.
Nothing below the coordinator knows it: the runner, the monitor and each
lease get callables.

May import: :mod:`nbpool.errors`, :mod:`nbpool.checks`, :mod:`nbpool.result`,
:mod:`nbpool.interfaces` (what a kernel is), :mod:`nbpool.kernels`. Never the launcher, the pool, the notebook side or a feature.
"""
