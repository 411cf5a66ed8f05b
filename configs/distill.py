"""Knowledge distillation (train.objective="distill", trainer/objectives/distill.py): a student a fifth
the quickstart model's size learns from the quickstart run's predictions and the same data.

  python train.py --config=configs/quickstart.py --workdir=runs/quickstart   # the teacher
  python train.py --config=configs/distill.py --workdir=runs/distill
  # the same student on the data alone, for comparison:
  python train.py --config=configs/distill.py --workdir=runs/student --config.train.objective=causal_lm

The teacher may be any decoder with the student's tokenizer: a workdir (train.distill.teacher_workdir)
or an HF directory (train.distill.teacher_hf_dir). Per target token the loss is
alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy; divergence=reverse_kl|jsd
picks another divergence. Validation reports the student's cross-entropy (val/ce), comparable with a
causal-LM run's val/loss.
"""

from configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.model.d_model = 128
  c.model.num_layers = 2
  c.model.num_heads = 4
  c.model.num_kv_heads = 2
  c.model.head_dim = 32
  c.model.mlp_dim = 384

  c.train.objective = "distill"
  c.train.distill.teacher_workdir = "runs/quickstart"
  c.train.distill.temperature = 1.0
  c.train.distill.alpha = 0.5
  c.eval.num_samples = 0
  return c
