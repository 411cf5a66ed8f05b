"""LoRA fine-tuning: configs/sft.py with low-rank adapters on a frozen bfloat16 base.

  python train.py --config=configs/lora.py --workdir=runs/lora
  python scripts/export_hf.py --workdir=runs/lora --output=exports/lora --best          # merged
  python scripts/export_hf.py --workdir=runs/lora --output=exports/lora-adapter --peft  # adapters

Only the adapters train and are checkpointed; WORKDIR/lora_base.json
records which base model they belong to.
"""

from configs import sft


def get_config():
  c = sft.get_config()
  c.lora.rank = 16
  c.lora.alpha = 32.0
  c.lora.dropout = 0.05
  c.lora.targets = "q,k,v,o,gate,up,down"
  c.lora.base_dtype = "bfloat16"
  c.optimizer.learning_rate = 1e-3
  return c
