"""Hugging Face T5ForConditionalGeneration <-> this repository's encoder-decoder (model/t5.py): the
config fields and the parameters. T5 v1.1 / Flan-T5 (gated GELU, untied head) and the original T5
(ReLU, tied embeddings) are reproduced exactly; anything else is refused naming the field."""


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


def read_config(hf: dict, path: str, check) -> dict:
  """config.model fields of a T5ForConditionalGeneration config.json (`check`: hf_config's field check)."""
  translated = {"vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
                "relative_attention_num_buckets", "relative_attention_max_distance", "layer_norm_epsilon",
                "feed_forward_proj", "tie_word_embeddings", "scale_decoder_outputs", "dense_act_fn", "is_gated_act",
                "initializer_factor", "n_positions", "output_past", "use_cache",
                "dropout_rate", "classifier_dropout"}  # dropout: training only; Strata trains without it
  check(hf, {}, translated, "T5ForConditionalGeneration", path)
  return {**config_fields(hf, path), "decoder_start_id": int(hf.get("decoder_start_token_id") or 0)}


def write_config(c, bos_id, eos_id) -> dict:
  """The config.json of T5ForConditionalGeneration for one of our encoder-decoders (read_config's inverse)."""
  mlp = {v: k for k, v in _MLPS.items()}.get(c.mlp)
  if not (mlp and c.norm == "rmsnorm" and c.position == "relative" and not c.use_bias
          and c.num_kv_heads == c.num_heads and c.norm_position == "pre"):
    raise UserError("this encoder-decoder is not T5 shaped (rmsnorm, relative positions, no biases, gated_gelu or "
                    "relu, num_kv_heads == num_heads), so it has no HF equivalent")
  return {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "vocab_size": c.vocab_size,
          "d_model": c.d_model, "d_kv": c.head_dim, "d_ff": c.mlp_dim, "num_layers": c.num_layers,
          "num_decoder_layers": c.num_decoder_layers or c.num_layers, "num_heads": c.num_heads,
          "relative_attention_num_buckets": c.relative_buckets,
          "relative_attention_max_distance": c.relative_max_distance, "layer_norm_epsilon": c.norm_eps,
          "feed_forward_proj": mlp, "tie_word_embeddings": c.tie_embeddings, "is_encoder_decoder": True,
          "dropout_rate": 0.0, "decoder_start_token_id": c.decoder_start_id, "pad_token_id": c.decoder_start_id,
          "bos_token_id": bos_id, "eos_token_id": eos_id, "dtype": "float32"}


def tensor_maps(c) -> list:
  """hf_weights' table for T5: every HF tensor, the parameters it feeds, and the reshapes both ways."""
  from model.hf_weights import TensorMap, same, transposed
  D, N, H = c.d_model, c.num_heads, c.head_dim
  proj = dict(to_ours=lambda w: [w.T.reshape(D, N, H)], to_hf=lambda x: x.reshape(D, N * H).T)
  out = dict(to_ours=lambda w: [w.T.reshape(N, H, D)], to_hf=lambda x: x.reshape(N * H, D).T)

  def attention(prefix: str, ours: str) -> list:
    return [TensorMap(f"{prefix}.{hf}.weight", ((ours, name),), stack=prefix.split(".")[0], **maps)
            for hf, name, maps in (("q", "query", proj), ("k", "key", proj), ("v", "value", proj), ("o", "out", out))]

  def mlp(prefix: str) -> list:
    stack = prefix.split(".")[0]
    names = (("wi_0", "gate"), ("wi_1", "up"), ("wo", "down")) if c.mlp == "gated_gelu" else (("wi", "up"), ("wo", "down"))
    return [TensorMap(f"{prefix}.DenseReluDense.{hf}.weight", (("mlp", name),), stack=stack, **transposed())
            for hf, name in names]

  def norm(name: str, ours: str) -> "TensorMap":
    return TensorMap(name, ((ours, "scale"),), stack=name.split(".")[0], **same())

  enc, dec = "encoder.block.{i}.layer", "decoder.block.{i}.layer"
  maps = (attention(f"{enc}.0.SelfAttention", "attention") + [norm(f"{enc}.0.layer_norm.weight", "attention_norm")]
          + mlp(f"{enc}.1") + [norm(f"{enc}.1.layer_norm.weight", "mlp_norm")]
          + attention(f"{dec}.0.SelfAttention", "attention") + [norm(f"{dec}.0.layer_norm.weight", "attention_norm")]
          + attention(f"{dec}.1.EncDecAttention", "cross_attention")
          + [norm(f"{dec}.1.layer_norm.weight", "cross_attention_norm")]
          + mlp(f"{dec}.2") + [norm(f"{dec}.2.layer_norm.weight", "mlp_norm")])
  bias = "block.0.layer.0.SelfAttention.relative_attention_bias.weight"  # in the first layer, shared by all
  maps += [TensorMap(hf, (ours,), per_layer=False, **same()) for hf, ours in (
      ("shared.weight", ("embed", "table")),
      ("encoder." + bias, ("encoder_bias", "table")), ("decoder." + bias, ("decoder_bias", "table")),
      ("encoder.final_layer_norm.weight", ("encoder_norm", "scale")),
      ("decoder.final_layer_norm.weight", ("decoder_norm", "scale")))]
  if not c.tie_embeddings:  # transformers 5 ties T5's head and saves none: then it is the embedding
    maps.append(TensorMap("lm_head.weight", (("lm_head",),), per_layer=False, fallback="shared.weight",
                          **transposed()))
  return maps


def tied_copies(c) -> list[tuple[str, str]]:
  """Copies of the embedding that T5 checkpoints may hold (transformers ties them on load)."""
  copies = [("encoder.embed_tokens.weight", "shared.weight"), ("decoder.embed_tokens.weight", "shared.weight")]
  return copies + ([("lm_head.weight", "shared.weight")] if c.tie_embeddings else [])
