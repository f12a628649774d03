"""Sweep planning (docs/design.md §10): named presets -> Hydra sweeps -> jobs -> a validated plan -> progress.

    presets    the suites (several Hydra sweeps sharing one sweep id) and every preset's description
    planning   each sweep's jobs, expanded exactly as `python -m bench.train -m` expands them, composed and
               validated before any compute, with the run folder and config hash each will have (a study:
               its name and file, its config validated at the corners of its search space)
    progress   the plan file, and each planned run's status read from the records themselves (a study's
               trials from its SQLite file)
    tuning     Optuna studies (`hydra/sweeper=optuna`): what the sweeper and the planner share
    __main__   `python -m bench.sweeps list | steps | plan | show | count`: what multirun.sh runs
The tests use the same functions. Nothing here launches, trains or reports.
"""
