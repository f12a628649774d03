"""The suite's SLURM launcher under the `hydra_plugins` namespace, where Hydra looks for launchers (it
instantiates only classes defined there): `hydra/launcher=slurm` (conf/hydra/launcher/slurm.yaml).
What it does is bench/slurm.py's."""
from bench import slurm


class SlurmLauncher(slurm.SlurmLauncher):
    """hydra-submitit-launcher's SLURM launcher whose driver reports cancelled jobs in seconds (bench.slurm)."""
