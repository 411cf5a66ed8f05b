"""Sentence embeddings from an encoder (BERT, RoBERTa, MiniLM): mean-pooled last hidden states over the
real tokens, L2-normalized, as sentence-transformers' all-MiniLM-L6-v2 computes them.

    embedder = Embedder.load("path/to/all-MiniLM-L6-v2")   # an HF directory, or an encoder run's workdir
    vectors = embedder.embed(["How do I read a file?", ...])  # float32 [N, D], unit length

Texts are tokenized with the model's tokenizer (its [CLS] ... [SEP]), cut at
`max_len` tokens, and batched at power-of-two lengths, so a new text length
rarely compiles anything.
"""

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from data import tokenizer as tokenizer_lib
from errors import UserError
from model import families
from model.decode import bucket
from parallel import mesh as mesh_lib
from parallel import sharding


@dataclasses.dataclass
class Embedder:
  cfg: object
  params: dict
  encode_text: object  # str -> token ids, special tokens included
  mesh: object
  max_len: int = 256
  batch_size: int = 32
  source: str = ""

  @classmethod
  def load(cls, path: str, max_len: int = 256, batch_size: int = 32) -> "Embedder":
    mesh = mesh_lib.mesh_of_sizes(None)
    if os.path.isfile(os.path.join(path, "config.json")):
      from model import hf_weights
      cfg, params = hf_weights.load(path, mesh)
      tok = tokenizer_lib.load_dir(path)
      tok.backend.no_padding()  # sentence-transformers' tokenizer.json pads every text to 128; we batch ourselves
      tok.backend.no_truncation()
      encode_text = functools.partial(tok.encode, add_special_tokens=True)
    elif os.path.isdir(os.path.join(path, "checkpoints")):
      cfg, params, encode_text = _restore_encoder(path, mesh)
    else:
      raise UserError(f"--encoder={path}: neither a Hugging Face model directory (config.json) nor a train.py "
                      "workdir (checkpoints/)")
    if cfg.family != "encoder":
      raise UserError(f"--encoder={path} holds a {cfg.family}, not an encoder (BERT, RoBERTa, MiniLM)")
    return cls(cfg, params, encode_text, mesh, min(max_len, cfg.max_seq_len), batch_size, path)

  @property
  def dim(self) -> int:
    return self.cfg.d_model

  @functools.cached_property
  def _forward(self):
    model = families.build(self.cfg)

    @jax.jit
    def pooled(params, tokens_BxT, mask_BxT):
      positions_BxT = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1], dtype=jnp.int32), tokens_BxT.shape)
      hidden_BxTxD = model.apply({"params": params}, tokens_BxT, positions_BxT, mask_BxT, method="encode")
      weights_BxTx1 = mask_BxT[..., None].astype(jnp.float32)
      mean_BxD = (hidden_BxTxD.astype(jnp.float32) * weights_BxTx1).sum(1) / jnp.maximum(weights_BxTx1.sum(1), 1)
      return mean_BxD / jnp.maximum(jnp.linalg.norm(mean_BxD, axis=-1, keepdims=True), 1e-12)
    return pooled

  def embed(self, texts: list[str]) -> np.ndarray:
    ids = [self._ids(t) for t in texts]
    out = np.zeros((len(texts), self.dim), np.float32)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
    for start in range(0, len(order), self.batch_size):
      chosen = order[start:start + self.batch_size]
      length = min(bucket(max(len(ids[i]) for i in chosen), 16), self.max_len)
      rows = sharding.round_to_batch_axes(self.mesh, len(chosen))
      tokens, mask = np.zeros((rows, length), np.int32), np.zeros((rows, length), np.int32)
      for r, i in enumerate(chosen):
        tokens[r, :len(ids[i])], mask[r, :len(ids[i])] = ids[i], 1
      with sharding.activate(self.mesh):
        out[chosen] = np.asarray(self._forward(self.params, tokens, mask))[:len(chosen)]
    return out

  def _ids(self, text: str) -> list[int]:
    ids = list(self.encode_text(text))
    if len(ids) > self.max_len:  # keep the closing [SEP]: the model saw it at the end of every text
      ids = ids[:self.max_len - 1] + ids[-1:]
    return ids


def _restore_encoder(workdir: str, mesh):
  """(cfg, params, text encoder) of an encoder run: its dataset's tokenizer, with [CLS] and [SEP]."""
  from data import pipeline
  from parallel import restore
  r = restore.restore(workdir, mesh)
  tok = tokenizer_lib.load(pipeline.dataset_metadata(r.config.data)["tokenizer_path"])
  specials = tokenizer_lib.encoder_special_ids(tok)
  cls_ids = [specials["cls_id"]] if "cls_id" in specials else []
  sep_ids = [specials["sep_id"]] if "sep_id" in specials else []
  return r.cfg, r.params, lambda text: cls_ids + tok.encode(text) + sep_ids
