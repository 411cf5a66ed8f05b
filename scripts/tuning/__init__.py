"""Hyperparameter sweeps over train.py runs with Optuna: the sweep file's form (space.py), one trial
as a train.py process (trial.py), the search loop (search.py), the results table and plots (report.py)."""
