"""The suite's Hydra plugins, under the `hydra_plugins` namespace, where Hydra looks for them (it instantiates
only classes defined there): the SLURM launcher here, `hydra/launcher=slurm` (conf/hydra/launcher/slurm.yaml;
what it does is bench/slurm.py's), and the Optuna sweeper in optuna_sweeper.py, `hydra/sweeper=optuna`
(conf/hydra/sweeper/optuna.yaml)."""
from bench import slurm


class SlurmLauncher(slurm.SlurmLauncher):
    """hydra-submitit-launcher's SLURM launcher whose driver reports cancelled jobs in seconds (bench.slurm)."""
