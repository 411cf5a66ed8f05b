"""The quickstart's learning rate and warmup, on shortened runs (about 9 minutes on a 2-core CPU).

  python scripts/sweep.py --sweep=sweeps/quickstart_lr.py --parallel=2

Trial 0 runs the config's own values (learning rate 1e-3, warmup 40) for comparison; TPE then searches,
and the median pruner stops trials whose validation loss trails the others' at the same step (from step
60 on).
"""

from scripts.tuning.space import Sweep, choice, log_uniform


def get_sweep():
  return Sweep(
      config="configs/quickstart.py",
      space={"optimizer.learning_rate": log_uniform(5e-4, 3e-3),
             "optimizer.warmup_steps": choice(40, 70, 100)},
      metric="val/loss",
      budget=8,
      startup_trials=3,
      # A longer warmup trails early and catches up: judge trials from the halfway evaluation on.
      prune_from_step=60,
      # Short runs of the quickstart: 120 steps (of 400), evaluated every 30 steps on 8 val batches,
      # with no test pass, no samples and no checkpoint but the one a stopped trial saves.
      overrides=("--config.train.steps=120", "--config.eval.every_steps=30", "--config.eval.steps=8",
                 "--config.eval.final_split=", "--config.eval.num_samples=0", "--config.log.every_steps=30",
                 "--config.checkpoint.every_steps=1000", "--config.log.tensorboard=False"),
  )
