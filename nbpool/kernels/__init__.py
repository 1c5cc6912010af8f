"""Worker kernels: one kernel's process, sockets, readiness, execution and end.

Inside:

- :mod:`.kernel`: the handles the pool holds: ``LocalKernel`` (started by a
  jupyter_client ``AsyncKernelManager``) and ``AttachedKernel`` (someone else's).
- :mod:`.execution`: one ``execute_request`` (or a private shell request
  such as ``pool.map``'s chunks) on a worker's own sockets, run by the thread
  that holds the lease.
- :mod:`.processes`: the provisioner event loop, process groups, the reaper
  client and memory readings; :mod:`._reaper` is the reaper program itself.
- :mod:`.ssh`: the SSH tunnel to an attached kernel only SSH can reach.

May import :mod:`nbpool.errors` and :mod:`nbpool.result`; nothing of the pool.
"""
