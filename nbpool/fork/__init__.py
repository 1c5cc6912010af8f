"""Warm workers: python kernels forked from a preloaded template process.

Inside:

- :mod:`.provisioner`: ``ForkingProvisioner``, a jupyter_client kernel
  provisioner that asks the fork server for a process instead of ``Popen``.
- :mod:`.server`: ``ForkServer`` and its ``Template`` processes (one per
  kernel command line and preload), and ``ForkedProcess`` (:mod:`.forked`),
  the ``Popen`` look-alike of a forked worker.
- :mod:`._template`: the template program (stdlib and ipykernel only).

Data flows: KernelManager → provisioner → server → template (JSON on its
control socket) → a forked child, whose pid comes back the same way.

May import :mod:`nbpool.errors` and :mod:`nbpool.kernels`.
"""
