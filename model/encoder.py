"""The encoder family: a bidirectional transformer (BERT, RoBERTa) with an MLM head and a pooler.

It reuses the decoder's pieces (`TransformerStack` with `causal=False`, so
scanning, remat, LoRA and the sharding rules apply unchanged) and adds what
BERT has and a decoder has not: token-type embeddings, a LayerNorm on the
embeddings, post-norm blocks (`cfg.norm_position="post"`), exact GELU
(`cfg.mlp="gelu_erf"`), and two optional heads. Parameters a config does not
ask for are never created, so a BertModel (pooler, no MLM head) imports and
exports without inventing or dropping a tensor.

Inputs match the decoder's: tokens, per-document positions (from 0; RoBERTa's
offset is added inside) and segment ids, where 0 marks padding and packed
documents, having different ids, never attend to each other.

    model.apply(v, tokens, positions, segments, token_types)                   # MLM logits [B,T,V] f32
    model.apply(v, tokens, positions, segments, token_types, method="encode")  # hidden states [B,T,D]
    model.apply(v, tokens, positions, segments, token_types, method="pool")    # pooled [B,D]
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from model.config import ModelConfig
from model.layers import Classifier, Embed, LearnedPositions, Norm, mean_of_tokens, param_init, zeros_init
from model.transformer import TransformerStack


def _gelu(cfg: ModelConfig, x):
  """The MLP's GELU flavour: BERT's heads use the same activation as its layers."""
  return jax.nn.gelu(x, approximate=cfg.mlp == "gelu")


def _dense(module: nn.Module, cfg: ModelConfig, x_BxD, name: str):
  """x @ W + b for a [D, D] head projection. Its output axis is named "mlp", not "embed": one array
  cannot name a logical axis twice, and "mlp" shards it like an MLP's hidden units."""
  w = module.param(name, param_init(cfg, ("embed", "mlp")), (cfg.d_model, cfg.d_model), cfg.weight_dtype)
  b = module.param(name + "_bias", zeros_init(("mlp",)), (cfg.d_model,), cfg.weight_dtype)
  dt = cfg.compute_dtype
  return jnp.einsum("...d,de->...e", x_BxD, w.astype(dt)) + b.astype(dt)


class TokenTypes(nn.Module):
  """Token-type (sentence A/B) embeddings: `cfg.type_vocab_size` rows."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, token_types_BxT):
    cfg = self.cfg
    table = self.param("table", param_init(cfg, (None, "embed")), (cfg.type_vocab_size, cfg.d_model),
                       cfg.weight_dtype)
    return jnp.take(table, token_types_BxT, axis=0).astype(cfg.compute_dtype)


class MlmHead(nn.Module):
  """BERT's masked-LM head: dense, GELU, norm, then the word embeddings (tied) plus a bias: logits f32."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, embed: Embed):
    cfg = self.cfg
    h_BxTxD = _gelu(cfg, _dense(self, cfg, x_BxTxD, "dense"))
    h_BxTxD = Norm(cfg, name="norm")(nn.with_logical_constraint(h_BxTxD, ("batch", "length", "act_embed")))
    bias_V = self.param("bias", zeros_init(("vocab",)), (cfg.vocab_size,), cfg.weight_dtype)
    logits_BxTxV = embed.attend(h_BxTxD) + bias_V.astype(jnp.float32)
    return nn.with_logical_constraint(logits_BxTxV, ("batch", "length", "act_vocab"))


class Pooler(nn.Module):
  """BERT's pooler: tanh(dense(hidden state of each row's first token, [CLS]))."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD):
    return jnp.tanh(_dense(self, self.cfg, x_BxTxD[:, 0], "dense"))


class EncoderLM(nn.Module):
  """Bidirectional encoder. `__call__` gives MLM logits (float32) when `cfg.mlm_head`, else the hidden
  states; `encode` gives the hidden states [B, T, D] and `pool` the pooled output [B, D] (`cfg.pooler`).

  `token_types_BxT` defaults to all zeros (as in transformers); it needs `cfg.type_vocab_size` > 0.
  """
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.embed = Embed(cfg)
    if cfg.position == "learned":
      self.positions = LearnedPositions(cfg, offset=cfg.position_offset)
    if cfg.type_vocab_size:
      self.token_types = TokenTypes(cfg)
    self.embed_norm = Norm(cfg)
    self.encoder = TransformerStack(cfg, causal=False)
    if cfg.norm_position == "pre":  # post-norm blocks end normalised already
      self.final_norm = Norm(cfg)
    if cfg.mlm_head:
      self.mlm_head = MlmHead(cfg)
    if cfg.pooler:
      self.pooler = Pooler(cfg)
    if cfg.num_labels:
      self.classifier = Classifier(cfg)

  def encode(self, tokens_BxT, positions_BxT, segments_BxT, token_types_BxT=None):
    """Last hidden states [B, T, D] in the compute dtype (transformers' last_hidden_state)."""
    cfg = self.cfg
    x_BxTxD = self.embed(tokens_BxT)
    if cfg.type_vocab_size:
      x_BxTxD = x_BxTxD + self.token_types(jnp.zeros_like(tokens_BxT) if token_types_BxT is None
                                           else token_types_BxT)
    elif token_types_BxT is not None:
      raise ValueError("token_types_BxT given, but config.model.type_vocab_size=0 (no token-type embeddings)")
    if cfg.position == "learned":
      x_BxTxD = x_BxTxD + self.positions(positions_BxT)
    x_BxTxD = self.embed_norm(x_BxTxD)
    x_BxTxD = self.encoder(x_BxTxD, positions_BxT, segments_BxT)
    if cfg.norm_position == "pre":
      x_BxTxD = self.final_norm(x_BxTxD)
    return nn.with_logical_constraint(x_BxTxD, ("batch", "length", "act_embed"))

  def pool(self, tokens_BxT, positions_BxT, segments_BxT, token_types_BxT=None):
    """The pooler's output [B, D] (transformers' pooler_output): the first token of each row."""
    if not self.cfg.pooler:
      raise ValueError("this encoder has no pooler (config.model.pooler=False)")
    return self.pooler(self.encode(tokens_BxT, positions_BxT, segments_BxT, token_types_BxT))

  def classify(self, x_BxTxD, segments_BxT):
    """Logits [B, num_labels] (float32) from the hidden states: BERT's and RoBERTa's heads are
    a classifier over the pooler's output ("cls"); sentence embeddings average the tokens ("mean")."""
    if self.cfg.pooling == "mean":
      x_BxD = mean_of_tokens(x_BxTxD, segments_BxT)
    else:
      x_BxD = self.pooler(x_BxTxD) if self.cfg.pooler else x_BxTxD[:, 0]
    return self.classifier(x_BxD)

  def __call__(self, tokens_BxT, positions_BxT, segments_BxT, token_types_BxT=None):
    """MLM logits [B, T, V] (`cfg.mlm_head`), class logits [B, C] (`cfg.num_labels`), else hidden states."""
    x_BxTxD = self.encode(tokens_BxT, positions_BxT, segments_BxT, token_types_BxT)
    if self.cfg.pooler and self.is_initializing():  # init creates every parameter the config has
      self.pooler(x_BxTxD)
    if self.cfg.num_labels:
      return self.classify(x_BxTxD, segments_BxT)
    if not self.cfg.mlm_head:
      return x_BxTxD
    return self.mlm_head(x_BxTxD, self.embed)
