"""Workers on a Slurm cluster: the ``nbpool-slurm`` kernel provisioner.

Inside:

- :mod:`.provisioner`: ``SlurmProvisioner`` runs a kernel as a Slurm job.
- :mod:`.jobs`: one ``squeue``/``sacct`` watcher per event loop.
- :mod:`.spec`: ``python -m nbpool slurm-spec install``, the kernelspec writer.

The entry point and import path ``nbpool.slurm:SlurmProvisioner`` are kept by
the re-export below. Imports nothing of the pool: jupyter_client loads it.
"""

from .provisioner import SlurmProvisioner

__all__ = ["SlurmProvisioner"]
