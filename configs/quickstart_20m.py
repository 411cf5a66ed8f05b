"""The quickstart's data and schedule with a ~20M-parameter model (d_model 512, 6 layers, GQA 8/4):
the larger CPU shape of `scripts/benchmark.py --compare_torch` (README, Speed).

  python train.py --config=configs/quickstart_20m.py --workdir=runs/quickstart_20m
"""

from configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.model.d_model = 512
  c.model.num_layers = 6
  c.model.num_heads = 8
  c.model.num_kv_heads = 4
  c.model.head_dim = 64
  c.model.mlp_dim = 1536
  c.optimizer.learning_rate = 6e-4
  return c
