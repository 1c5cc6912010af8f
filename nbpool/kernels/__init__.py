"""Worker kernels: one kernel's process, sockets, readiness, execution and end.

Inside:

- :mod:`.kernel`: the handles the pool holds: ``LocalKernel`` (started by a
  jupyter_client ``AsyncKernelManager``) and ``AttachedKernel`` (someone else's).
  How a ``LocalKernel`` is launched (forked or spawned: its ``Origin``) is up to
  the ``Provisioning`` its launcher passes in; this package knows no fork server.
- :mod:`.execution`: one ``execute_request`` (or a private shell request
  such as ``pool.map``'s chunks) on a worker's own sockets, run by the thread
  that holds the lease.
- :mod:`.processes`: the provisioner event loop, process groups, the reaper
  client and memory readings; :mod:`._reaper` is the reaper program itself.
- :mod:`.ssh`: the SSH tunnel to an attached kernel only SSH can reach.

May import :mod:`nbpool.errors` and :mod:`nbpool.result`; nothing built on it
(``fork``, ``kept``, ``core``, the launcher, the pool, ``notebook``: tests/unit/test_layering.py).
"""
