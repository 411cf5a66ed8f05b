"""Hugging Face T5ForConditionalGeneration <-> this repository's encoder-decoder (model/t5.py): the
config fields and the parameters. T5 v1.1 / Flan-T5 (gated GELU, untied head) and the original T5
(ReLU, tied embeddings) are reproduced exactly; anything else is refused naming the field."""

import numpy as np

from errors import UserError

_MLPS = {"gated-gelu": "gated_gelu", "relu": "relu"}


def _scales_decoder_output(hf: dict) -> bool:
  """Original T5 ties its head to the embeddings and scales the decoder's output by d_model^-0.5; v1.1
  has its own head and no scaling. A config.json says so as tie_word_embeddings (false in v1.1);
  transformers 5 reads that into scale_decoder_outputs and always ties, so its own configs say it there."""
  return bool(hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True)))


def config_fields(hf: dict, where: str = "config.json") -> dict:
  """config.model fields from a T5 config.json's contents."""
  proj = hf.get("feed_forward_proj", "relu")
  if proj not in _MLPS:
    raise UserError(f"{where}: feed_forward_proj={proj!r}; Strata reproduces T5 exactly with "
                    f"{' or '.join(_MLPS)} only")
  heads = hf["num_heads"]
  return dict(family="encoder_decoder", position="relative", norm="rmsnorm", norm_position="pre", scan_layers=False,
              vocab_size=hf["vocab_size"], d_model=hf["d_model"], num_layers=hf["num_layers"],
              num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"], num_heads=heads,
              num_kv_heads=heads, head_dim=hf["d_kv"], mlp_dim=hf["d_ff"], mlp=_MLPS[proj],
              norm_eps=hf.get("layer_norm_epsilon", 1e-6), use_bias=False,
              tie_embeddings=_scales_decoder_output(hf),
              relative_buckets=hf.get("relative_attention_num_buckets", 32),
              relative_max_distance=hf.get("relative_attention_max_distance", 128))


def _attention(sd: dict, prefix: str, heads: int, head_dim: int) -> dict:
  d_model = sd[prefix + ".q.weight"].shape[1]
  qkv = {name: sd[f"{prefix}.{hf}.weight"].T.reshape(d_model, heads, head_dim)
         for name, hf in (("query", "q"), ("key", "k"), ("value", "v"))}
  return {**qkv, "out": sd[prefix + ".o.weight"].T.reshape(heads, head_dim, d_model)}


def _mlp(sd: dict, prefix: str, gated: bool) -> dict:
  if gated:
    return {"gate": sd[prefix + ".wi_0.weight"].T, "up": sd[prefix + ".wi_1.weight"].T,
            "down": sd[prefix + ".wo.weight"].T}
  return {"up": sd[prefix + ".wi.weight"].T, "down": sd[prefix + ".wo.weight"].T}


def params_from_hf(sd: dict, fields: dict) -> dict:
  """The parameter tree of model/t5.py from a T5 state dict (name -> numpy array, as transformers saves it)."""
  heads, head_dim, gated = fields["num_heads"], fields["head_dim"], fields["mlp"] == "gated_gelu"
  scale = lambda name: {"scale": sd[name]}  # noqa: E731
  params = {
      "embed": {"table": sd["shared.weight"]},
      "encoder_bias": {"table": sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]},
      "decoder_bias": {"table": sd["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]},
      "encoder_norm": scale("encoder.final_layer_norm.weight"),
      "decoder_norm": scale("decoder.final_layer_norm.weight"),
  }
  for i in range(fields["num_layers"]):
    block = f"encoder.block.{i}.layer"
    params[f"encoder_layers_{i}"] = {
        "attention": _attention(sd, f"{block}.0.SelfAttention", heads, head_dim),
        "attention_norm": scale(f"{block}.0.layer_norm.weight"),
        "mlp": _mlp(sd, f"{block}.1.DenseReluDense", gated),
        "mlp_norm": scale(f"{block}.1.layer_norm.weight"),
    }
  for i in range(fields["num_decoder_layers"]):
    block = f"decoder.block.{i}.layer"
    params[f"decoder_layers_{i}"] = {
        "attention": _attention(sd, f"{block}.0.SelfAttention", heads, head_dim),
        "attention_norm": scale(f"{block}.0.layer_norm.weight"),
        "cross_attention": _attention(sd, f"{block}.1.EncDecAttention", heads, head_dim),
        "cross_attention_norm": scale(f"{block}.1.layer_norm.weight"),
        "mlp": _mlp(sd, f"{block}.2.DenseReluDense", gated),
        "mlp_norm": scale(f"{block}.2.layer_norm.weight"),
    }
  if not fields["tie_embeddings"]:
    params["lm_head"] = sd["lm_head.weight"].T
  return _as_arrays(params)


def _as_arrays(tree):
  if isinstance(tree, dict):
    return {k: _as_arrays(v) for k, v in tree.items()}
  return np.ascontiguousarray(np.asarray(tree, np.float32))
