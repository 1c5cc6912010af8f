"""Warm workers: python kernels forked from a preloaded template process.

Inside:

- :mod:`.provisioner`: ``ForkingProvisioner``, a jupyter_client kernel
  provisioner that asks the fork server for a process instead of ``Popen``,
  and records how each launch went (an ``Origin``: forked, or spawned and why).
- :mod:`.server`: ``ForkServer`` and its ``Template`` processes (one per
  kernel command line and preload), and ``ForkedProcess``, the ``Popen``
  look-alike of a forked worker.
- :mod:`._template`: the template program (stdlib and ipykernel only).

Data flows: KernelManager → provisioner → server → template (JSON on its
control socket) → a forked child, whose pid comes back the same way. A
refusal (the server's checks of the command line, the template's of what the
preload left: threads, loops, sockets) comes back as ``ForkUnavailable``,
which the provisioner turns into the kernel's ``Origin``; a preload that
raised, as :class:`~nbpool.errors.WorkerStartFailed`. Which kernels are
forked, and the preload of the spawned ones, are the launcher's
(:mod:`nbpool.launcher`).

May import :mod:`nbpool.errors` and :mod:`nbpool.kernels`.
"""
