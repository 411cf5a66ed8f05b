"""Typed config sections: one definition of every key, its default and its rules (configs/schema.py)."""

import dataclasses
import json
import typing

import pytest

from configs import base, classify, dpo, mlm_quickstart, quickstart, reward, schema
from conftest import apply_overrides
from errors import UserError
from parallel import restore
from typed_config import Section


def _run_config(**overrides) -> schema.RunConfig:
  return schema.RunConfig.from_config(apply_overrides(base.base_config(), {"data.dir": "d", **overrides}))


def test_the_config_dict_is_built_from_the_typed_sections_and_reads_back_unchanged():
  """Every key of base_config() is a field of a section with the same default, and back again."""
  config = base.base_config()
  config.data.dir = "d"
  typed = schema.RunConfig.from_config(config)
  assert typed.to_dict() == config.to_dict()
  for name, section in vars(typed).items():
    assert isinstance(section, Section), name
    hints = typing.get_type_hints(type(section))
    for field in dataclasses.fields(section):
      if hints[field.name] in (int, float, bool, str):
        assert type(getattr(section, field.name)) is hints[field.name], (name, field.name)


@pytest.mark.parametrize("module", [quickstart, classify, mlm_quickstart, dpo, reward])
def test_the_shipped_experiments_are_valid(module):
  typed = schema.RunConfig.from_config(module.get_config())
  assert typed.train.steps > 0 and typed.model.family in ("decoder", "encoder")


@pytest.mark.parametrize("overrides, message", [
    ({"optimizer.schedule": "linear"}, "config.optimizer.schedule='linear'; expected one of 'cosine', 'wsd', "
                                       "'constant'"),
    ({"model.family": "t5"}, "config.model.family='t5'; expected one of 'decoder', 'encoder'"),
    ({"train.on_nonfinite": "ignore"}, "config.train.on_nonfinite='ignore'; expected one of 'stop', 'skip'"),
    ({"eval.best_mode": "maximum"}, "config.eval.best_mode='maximum'"),
    ({"data.packing": "pad"}, "config.data.packing='pad'"),
    ({"lora.base_dtype": "int8"}, "config.lora.base_dtype='int8'"),
    ({"train.batch_size": 0}, "config.train.batch_size=0; expected a positive integer"),
    ({"train.batch_size": 6, "train.grad_accum_steps": 4},
     "config.train.batch_size=6; expected a multiple of config.train.grad_accum_steps=4"),
    ({"train.mlm.rate": 0.0}, r"config.train.mlm.rate=0.0; expected a fraction in \(0, 1\]"),
    ({"train.mlm.mask_fraction": 0.95}, "config.train.mlm.mask_fraction=0.95; expected non-negative fractions"),
    ({"optimizer.b2": 1.5}, r"config.optimizer.b2=1.5; expected a fraction in \[0, 1\]"),
    ({"eval.best_metric": "loss"}, "config.eval.best_metric='loss'; expected 'val/METRIC' or 'task/NAME/METRIC'"),
    ({"eval.steps": 0}, "config.eval.best_metric='val/loss'; expected a task metric when config.eval.steps=0"),
    ({"checkpoint.every_steps": 0}, "config.checkpoint.every_steps=0; expected a positive number of steps"),
    ({"mesh.data": 0}, "config.mesh.data=0; expected a positive size, or -1"),
    ({"mesh.data": -1}, "config.mesh: data=-1, fsdp=-1; expected at most one axis of size -1"),
    ({"lora.rank": 4}, "config.lora.rank > 0 trains adapters on a frozen Hugging Face base model; set config.init.hf_dir"),
    ({"lora.rank": 4, "init.hf_dir": "h", "lora.targets": "q,query"}, "config.lora.targets='q,query'"),
    ({"init.hf_dir": "h", "init.workdir": "w"}, "config.init.workdir='w'; expected '' when config.init.hf_dir"),
    ({"model.position": "learned", "model.max_seq_len": 128, "train.seq_len": 256},
     "config.train.seq_len=256 exceeds config.model.max_seq_len=128"),
    ({"model.num_labels": -1}, "config.model.num_labels=-1; expected 0 or more"),
    ({"train.dpo.beta": 0.0}, "config.train.dpo.beta=0.0; expected a positive number"),
    ({"train.dpo.loss_type": "kto"}, "config.train.dpo.loss_type='kto'; expected one of 'sigmoid', 'ipo'"),
    ({"model.num_heads": 6, "model.num_kv_heads": 4}, "config.model.num_heads=6; expected a multiple of"),
])
def test_a_bad_value_is_refused_in_one_line_naming_the_field(overrides, message):
  with pytest.raises(UserError, match=message):
    _run_config(**overrides)


def test_a_mapping_is_checked_field_by_field():
  """What a ConfigDict's own type lock cannot see: a run's config.json edited by hand, or a plain dict."""
  with pytest.raises(UserError, match="config.train.steps='10'; expected an integer"):
    schema.TrainConfig.from_config({"steps": "10"})
  with pytest.raises(UserError, match="config.train.seq_len=True; expected an integer"):
    schema.TrainConfig.from_config({"seq_len": True})
  with pytest.raises(UserError, match="unknown config key config.train.stepz; valid keys of config.train: "
                                      "batch_size, distill, dpo, grad_accum_steps"):
    schema.TrainConfig.from_config({"stepz": 10})
  assert schema.OptimizerConfig.from_config({"learning_rate": 1}).learning_rate == 1.0  # an int is a number
  assert isinstance(schema.OptimizerConfig.from_config({"learning_rate": 1}).learning_rate, float)


def test_vocab_chunk_is_refused_where_the_objective_ignores_it():
  with pytest.raises(UserError, match="config.train.vocab_chunk=64 applies to objectives"):
    _run_config(**{"train.vocab_chunk": 64, "train.objective": "masked_lm", "model.family": "encoder"})


def test_a_run_config_json_reads_back_typed_with_todays_defaults_for_keys_it_predates(tmp_path):
  saved = _run_config(**{"train.steps": 7}).to_dict()
  del saved["train"]["max_skipped_steps"], saved["log"]  # written before those keys existed
  (tmp_path / "config.json").write_text(json.dumps(saved))
  typed = restore.load_run_config(str(tmp_path))
  assert typed.train.steps == 7 and typed.train.max_skipped_steps == 10 and typed.log.every_steps == 10
  saved["optimizer"]["schedule"] = "linear"
  (tmp_path / "config.json").write_text(json.dumps(saved))
  with pytest.raises(UserError, match=r"config.json: config.optimizer.schedule='linear'"):
    restore.load_run_config(str(tmp_path))


def test_the_model_section_carries_the_adapters_only_under_lora():
  assert _run_config().model_config().lora is None
  typed = _run_config(**{"lora.rank": 4, "init.hf_dir": "h", "lora.targets": "q, v"})
  assert typed.model_config().lora.names == ("q", "v") and typed.model_config().lora.scale == 4.0
  hash(typed.model_config())  # a flax module field: frozen and hashable
