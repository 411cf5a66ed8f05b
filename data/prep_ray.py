"""Ray runner: data preparation on Ray Data, on a local Ray or a cluster.

The per-document stages (data/prep_stages.py) are map operations over
documents. Every global decision is a distributed group-by, so no host holds
the corpus-wide state the decisions are made from:

  boilerplate   line key -> how many documents contain it
  exact dedup   exact key -> its documents; the smallest id survives
  near dedup    (band, band values) -> candidate pairs; a pair is emitted by the
                first band the two share (so once). The signature estimate settles
                most pairs; with verify="exact" the rest meet their documents'
                shingle sets by two more group-bys (document id, then pair).
                Connected components by min-label propagation: every
                document takes the smallest id among its own label and its
                neighbours', a group-by per round, until no label changes (rounds:
                the widest cluster's diameter + 1). The label is the cluster's
                smallest id, which survives, as in data/dedup.py.
  tokenize      a map, after the tokenizer is trained on the driver

The driver streams the decisions, sorted by input position, into
data/prep_write.py: the dataset is byte-identical to the local runner's. It
holds the boilerplate line set (broadcast to the workers), one statistics
record per input file, and the current document of the stream.

On a cluster every node needs this repository importable (the same image or
`pip install -e .`) and the inputs at the same paths; the driver writes OUTPUT.
"""

import contextlib
import copy
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import uuid

import numpy as np

from data import dedup, prep_stages, prep_write, sources
from data import stage_stats as st
from data import tokenizer as tokenizer_lib
from data.prep_io import file_sha256, note
from errors import UserError

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Per worker process, for the current run only: objects fetched or built once (boilerplate set,
# decontamination index, hasher, tokenizer). A new run id empties it.
_CACHE = {}


# --- connecting -----------------------------------------------------------------------------------

def _probe(address: str, timeout_s: float) -> None:
  """Fails fast with a clear message when nothing listens at the address (ray.init would wait)."""
  host, _, port = address.removeprefix("ray://").rpartition(":")
  host = host.removeprefix("[").removesuffix("]")  # [::1]:6379
  if not host or not port.isdigit():
    raise UserError(f"--ray_address={address!r}: expected HOST:PORT, ray://HOST:PORT or 'auto'")
  try:
    socket.create_connection((host, int(port)), timeout=timeout_s).close()
  except OSError as e:
    raise UserError(f"--ray_address={address}: no Ray cluster answered within {timeout_s:g} s "
                    f"({e.strerror or e})") from None


def _import_ray():
  try:
    import ray
    import ray.data  # noqa: F401
  except ImportError:
    raise UserError("--runner=ray needs Ray Data: pip install -e '.[ray]'") from None
  return ray


def _join_within(ray, address: str, timeout_s: float, runtime_env: dict) -> None:
  """ray.init(address) with a deadline: something that accepts connections but is no Ray head
  (a dashboard port, a client port without ray://) makes ray.init retry for minutes."""
  outcome = {}

  def join():
    try:
      ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    except BaseException as e:  # noqa: BLE001 -- handed to the caller's thread
      outcome["error"] = e
    else:
      outcome["joined"] = True

  thread = threading.Thread(target=join, name="ray-init", daemon=True)
  thread.start()
  thread.join(timeout_s)
  if "joined" in outcome:
    return
  if "error" in outcome:
    raise UserError(f"--ray_address={address}: cannot join the Ray cluster "
                    f"({type(outcome['error']).__name__}: {outcome['error']})")
  raise UserError(f"--ray_address={address}: no Ray cluster answered within {timeout_s:g} s "
                  f"(is it a Ray head's GCS port, 6379 by default?)")


def connect(address: str, timeout_s: float, num_cpus: int) -> bool:
  """Joins the cluster at `address`, or starts a local Ray; True if this call started Ray."""
  ray = _import_ray()
  if ray.is_initialized():
    note(f"using the Ray session already running in this process ({ray.cluster_resources().get('CPU', 0):g} CPUs)")
    return False
  runtime_env = {"env_vars": {"PYTHONPATH": _REPO}}  # workers import data/ as the driver does
  if address:
    if address != "auto":
      _probe(address, timeout_s)
    _join_within(ray, address, timeout_s, runtime_env)
  else:
    ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, runtime_env=runtime_env,
             log_to_driver=False)
  return True


@contextlib.contextmanager
def _data_context():
  """This run's Ray Data settings, the caller's restored afterwards."""
  import ray.data
  from ray.data.context import ShuffleStrategy
  saved = ray.data.DataContext.get_current()
  ctx = copy.deepcopy(saved)
  ctx.enable_progress_bars = False
  ctx.print_on_execution_start = False
  ctx.execution_options.preserve_order = True  # a sorted dataset stays sorted through maps and filters
  # Sort-based shuffles run as tasks; the hash shuffle's actors cost seconds to start for every
  # group-by on a small machine, whatever the data size.
  ctx.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
  ray.data.DataContext._set_current(ctx)
  level = logging.getLogger("ray.data").level
  logging.getLogger("ray.data").setLevel(logging.WARNING)  # no line per executed dataset
  try:
    yield
  finally:
    ray.data.DataContext._set_current(saved)
    logging.getLogger("ray.data").setLevel(level)


def _cached(run: str, key, build):
  if _CACHE.get("run") != run:
    _CACHE.clear()
    _CACHE["run"] = run
  if key not in _CACHE:
    _CACHE[key] = build()
  return _CACHE[key]


def _get(run: str, ref):
  import ray
  return _cached(run, ("ref", ref.hex()), lambda: ray.get(ref))


# --- per-document stages (map operations) ---------------------------------------------------------

def _read(row, files, cfg):
  """One input file -> its documents, then one file row (pos -1) with the read counts and sha256."""
  f = files[row["file"]]
  read = sources.ReadStats()
  for pos, doc in enumerate(sources.read_documents(f, cfg.read.on_decode_error, read)):
    yield {"file": row["file"], "pos": pos, "id": doc.id, "source": doc.source, "text": doc.text, "sha256": ""}
  stats = prep_stages.new_stats(prep_stages.CLEAN_STAGES)
  for reason, n in read.skipped.items():
    st.count(stats["read"], "skipped_" + reason, n)
  yield {"file": row["file"], "pos": -1, "id": "", "source": "", "text": json.dumps(stats),
         "sha256": file_sha256(f.path)}


def _clean(row, cfg):
  if row["pos"] < 0:  # the file row: its statistics ride in `text`
    return {**row, "kept": False, "removal": "", "stats": row["text"], "text": ""}
  stats = prep_stages.new_stats(prep_stages.CLEAN_STAGES)
  text, removal = prep_stages.clean(sources.Document(row["id"], row["source"], row["text"]), cfg, stats)
  return {**row, "text": text or "", "kept": removal is None, "removal": json.dumps(removal or ""),
          "stats": json.dumps(stats)}


def _line_keys(row, cfg):
  # Arrow has no Python-int column wider than int64: the 64-bit keys travel as signed ints.
  return [{"line": k - (1 << 64) if k >> 63 else k} for k in prep_stages.line_keys(row["text"], cfg)]


def _strip(row, cfg, run: str, boiler_ref):
  boiler = _get(run, boiler_ref)
  contam = _cached(run, "decontam", lambda: prep_stages.decontam_index(cfg))
  hasher = _cached(run, "hasher", lambda: prep_stages.minhasher(cfg))
  stats = prep_stages.new_stats(prep_stages.STRIP_STAGES)
  text, removal = prep_stages.strip(row["id"], row["text"], cfg, boiler, contam, stats)
  key, sig = prep_stages.keys(text or "", cfg, hasher) if removal is None else (b"", np.zeros(0, np.uint64))
  return {"file": row["file"], "pos": row["pos"], "id": row["id"], "source": row["source"], "text": text or "",
          "kept": removal is None, "removal": json.dumps(removal or ""), "stats": json.dumps(stats),
          "key": key, "sig": sig.tobytes(), "length": len(text or "")}


# --- global decisions (group-bys) -----------------------------------------------------------------

def _file_stats(group, max_examples: int) -> dict:
  """A file's documents' statistics, added up in document order (as the local runner records them)."""
  order = np.argsort(group["pos"], kind="stable")
  merged = st.merge([json.loads(group["stats"][i]) for i in order], max_examples)
  return {"file": np.asarray([group["file"][0]]), "stats": np.asarray([json.dumps(merged)], dtype=object)}


def _stats(ds, cfg, num_partitions: int) -> dict:
  """The statistics of every document of `ds`, added up per file (a group-by), then over files in order."""
  k = cfg.output.examples_per_reason
  rows = ds.select_columns(["file", "pos", "stats"]).groupby("file", num_partitions=num_partitions) \
      .map_groups(_file_stats, fn_args=(k,), batch_format="numpy").take_all()
  return st.merge([json.loads(r["stats"]) for r in sorted(rows, key=lambda r: r["file"])], k)


LIVE_COLUMNS = ("file", "pos", "id", "source", "text", "key", "sig", "length", "dup_of", "reason")


def _live_row(r, **updates) -> dict:
  """A document after boilerplate removal, in one column order (so datasets can be unioned)."""
  return {c: updates.get(c, r.get(c, "")) for c in LIVE_COLUMNS}


def _exact_groups(group):
  """Marks every document of an exact-key group but the smallest id as its duplicate.

  Groups with binary columns are Arrow tables: a NumPy batch would hold them as fixed-width
  bytes, which drop trailing zero bytes."""
  import pyarrow as pa
  ids = group.column("id").to_pylist()
  dup_of = ["" if i == min(ids) else min(ids) for i in ids]
  group = group.select(list(LIVE_COLUMNS[:-2]))
  group = group.append_column("dup_of", pa.array(dup_of, pa.string()))
  return group.append_column("reason", pa.array(["exact_duplicate" if d else "" for d in dup_of], pa.string()))


def _band_rows(row, bands: int, rows: int):
  sig = np.frombuffer(row["sig"], np.uint64)
  return [{"band": b, "bucket": sig[b * rows:(b + 1) * rows].tobytes(), "id": row["id"], "sig": row["sig"]}
          for b in range(bands)]


def _bucket_pairs(group, rows: int, threshold: float, exact: bool) -> dict:
  """Candidate pairs of one LSH bucket (an Arrow table), each emitted only by the first band the pair
  shares: `edge` as the signature estimate decides it, `unsure` where only the shingle sets can."""
  band = group.column("band")[0].as_py()
  members = sorted(zip(group.column("id").to_pylist(), group.column("sig").to_pylist()))
  ids = [i for i, _ in members]
  sigs = [np.frombuffer(sig, np.uint64) for _, sig in members]
  a, b, edge, unsure = [], [], [], []
  for x in range(len(ids)):
    for y in range(x + 1, len(ids)):
      equal = sigs[x] == sigs[y]
      if band and equal[:band * rows].reshape(band, rows).all(axis=1).any():
        continue  # an earlier band emitted this pair
      estimate = float(equal.mean())
      decided = dedup.estimate_decides(estimate, threshold, len(equal), exact)
      a.append(ids[x])
      b.append(ids[y])
      edge.append(bool(decided))
      unsure.append(decided is None)
  return {"a": np.asarray(a, dtype=object), "b": np.asarray(b, dtype=object), "edge": np.asarray(edge, bool),
          "unsure": np.asarray(unsure, bool)}


def _pair_shingles(group, cfg, run: str):
  """One document's row and the unsure pairs it is in -> (pair, its shingle set) for each pair."""
  import pyarrow as pa
  rows = group.to_pylist()
  text = next(r["text"] for r in rows if not r["pair"])
  hasher = _cached(run, "hasher", lambda: prep_stages.minhasher(cfg))
  pairs = [r["pair"] for r in rows if r["pair"]]
  shingles = hasher.shingle_set(text).tobytes() if pairs else b""
  return pa.table({"pair": pa.array(pairs, pa.string()), "shingles": pa.array([shingles] * len(pairs), pa.binary())})


def _pair_similarity(group, threshold: float):
  """A pair's two shingle sets (an Arrow table: binary stays whole) -> the pair and whether it is an edge."""
  import pyarrow as pa
  a, b = (np.frombuffer(x, np.uint64) for x in group.column("shingles").to_pylist())
  first, second = json.loads(group.column("pair")[0].as_py())
  return pa.table({"a": [first], "b": [second], "edge": [dedup.jaccard(a, b) >= threshold]})


def _exact_similarity(unsure, live, cfg, run: str, num_partitions: int):
  """The `unsure` pairs with `edge` decided on the exact Jaccard similarity of their shingle sets.

  Two group-bys: by document id, where each document meets its pairs (its shingle set travels
  once per unsure pair it is in: 8 bytes a shingle); then by pair."""
  ends = unsure.flat_map(lambda r: [{"id": x, "pair": json.dumps([r["a"], r["b"]]), "text": ""}
                                    for x in (r["a"], r["b"])])
  texts = live.map(lambda r: {"id": r["id"], "pair": "", "text": r["text"]})
  return ends.union(texts).groupby("id", num_partitions=num_partitions) \
      .map_groups(_pair_shingles, fn_args=(cfg, run), batch_format="pyarrow") \
      .groupby("pair", num_partitions=num_partitions) \
      .map_groups(_pair_similarity, fn_args=(cfg.near_dedup.threshold,), batch_format="pyarrow")


def _mark_near_duplicate(group):
  """A document's row, plus a row from the clustering (file -1) when it was dropped -> the document row."""
  import pyarrow as pa
  rows = group.to_pylist()
  doc = next(r for r in rows if r["file"] >= 0)
  for r in rows:
    if r["file"] < 0:
      doc.update(dup_of=r["dup_of"], reason=r["reason"])
  return pa.Table.from_pylist([doc], schema=group.schema)


def _adjacency(group) -> dict:
  node = group["node"][0]
  nbrs = sorted(set(group["nbr"]))
  return {"node": np.asarray([node], dtype=object), "label": np.asarray([min(node, nbrs[0])], dtype=object),
          "nbrs": np.asarray([json.dumps(nbrs)], dtype=object), "changed": np.asarray([1])}


def _send_label(row):
  """A node keeps its record and sends its label to every neighbour."""
  out = [{"node": row["node"], "label": row["label"], "nbrs": row["nbrs"]}]
  return out + [{"node": n, "label": row["label"], "nbrs": ""} for n in json.loads(row["nbrs"])]


def _take_smallest_label(group) -> dict:
  own = [i for i, n in enumerate(group["nbrs"]) if n][0]
  label = min(group["label"])
  return {"node": group["node"][:1], "label": np.asarray([label], dtype=object), "nbrs": group["nbrs"][own:own + 1],
          "changed": np.asarray([int(label != group["label"][own])])}


def _components(edges, num_partitions: int):
  """{node, label = smallest id of its connected component} for every node with an edge."""
  both = edges.flat_map(lambda r: [{"node": r["a"], "nbr": r["b"]}, {"node": r["b"], "nbr": r["a"]}])
  labels = both.groupby("node", num_partitions=num_partitions).map_groups(_adjacency, batch_format="numpy") \
      .materialize()
  while True:
    labels = labels.flat_map(_send_label).groupby("node", num_partitions=num_partitions) \
        .map_groups(_take_smallest_label, batch_format="numpy").materialize()
    if not labels.sum("changed"):
      return labels.select_columns(["node", "label"])


def _near_dedup(live, cfg, run: str, num_partitions: int):
  """(the live documents with near duplicates marked, counts and cluster sizes for the report)."""
  bands, rows = dedup.lsh_params(cfg.near_dedup)
  exact = cfg.near_dedup.verify == "exact"
  pairs = live.select_columns(["id", "sig"]).flat_map(_band_rows, fn_args=(bands, rows)) \
      .groupby(["band", "bucket"], num_partitions=num_partitions) \
      .map_groups(_bucket_pairs, fn_args=(rows, cfg.near_dedup.threshold, exact), batch_format="pyarrow") \
      .materialize()
  edges = pairs.filter(lambda r: r["edge"]).select_columns(["a", "b"])
  unsure = pairs.filter(lambda r: r["unsure"]).materialize()
  num_unsure = unsure.count()
  if num_unsure:
    verified = _exact_similarity(unsure, live, cfg, run, num_partitions)
    edges = edges.union(verified.filter(lambda r: r["edge"]).select_columns(["a", "b"]))
  edges = edges.materialize()
  counts = {"lsh_bands": bands, "lsh_rows": rows, "candidate_pairs": pairs.count(), "exact_comparisons": num_unsure,
            "verified_edges": edges.count()}
  sizes, marked = {}, live.map(_live_row)
  if counts["verified_edges"]:
    labels = _components(edges, num_partitions)
    histogram = labels.groupby("label", num_partitions=num_partitions).count() \
        .map(lambda r: {"size": r["count()"]}).groupby("size").count().take_all()
    sizes = {str(r["size"]): r["count()"] for r in sorted(histogram, key=lambda r: r["size"])}
    # A join by group-by: each dropped document's id meets a row carrying its cluster's smallest id.
    dropped = labels.filter(lambda r: r["node"] != r["label"]).map(
        lambda r: _live_row({}, file=-1, pos=-1, id=r["node"], key=b"", sig=b"", length=0, dup_of=r["label"],
                            reason="near_duplicate"))
    marked = marked.union(dropped).groupby("id", num_partitions=num_partitions) \
        .map_groups(_mark_near_duplicate, batch_format="pyarrow")
  counts.update(clusters=sum(sizes.values()), max_cluster_size=max(map(int, sizes), default=0),
                documents_removed=sum((int(k) - 1) * n for k, n in sizes.items()))
  return marked.materialize(), {"counts": counts, "cluster_sizes": sizes}


def _dedup_stages(live, cfg) -> dict:
  """Documents and characters into and out of each dedup stage, from one aggregation by reason."""
  from ray.data.aggregate import Count, Sum
  totals = {r["reason"]: (r["count()"], r["sum(length)"] or 0)
            for r in live.groupby("reason").aggregate(Count(), Sum("length")).take_all()}
  def stage(reason, before_reasons):
    before = [totals.get(x, (0, 0)) for x in before_reasons]
    after = [totals.get(x, (0, 0)) for x in before_reasons if x != reason]
    return prep_write.dedup_stage(sum(n for n, _ in before), sum(n for n, _ in after),
                                  sum(c for _, c in before), sum(c for _, c in after), reason)
  stats = {}
  if cfg.exact_dedup.enabled:
    stats["exact_dedup"] = stage("exact_duplicate", ("", "exact_duplicate", "near_duplicate"))
  if cfg.near_dedup.enabled:
    stats["near_dedup"] = stage("near_duplicate", ("", "near_duplicate"))
  return stats


# --- tokenizing ------------------------------------------------------------------------------------

def _load_tokenizer(files: dict) -> tokenizer_lib.Tokenizer:
  """The driver's tokenizer, rebuilt from its files' bytes (workers need not see the driver's disk)
  in a directory named by their content: one per tokenizer per machine, however many runs."""
  digest = hashlib.sha256(b"".join(name.encode() + b"\0" + data for name, data in files.items())).hexdigest()
  d = os.path.join(tempfile.gettempdir(), f"strata-tok-{digest[:16]}")
  if not os.path.isdir(d):
    tmp = tempfile.mkdtemp(prefix=f"strata-tok-{digest[:16]}-", dir=tempfile.gettempdir())
    for name, data in files.items():
      with open(os.path.join(tmp, name), "wb") as f:
        f.write(data)
    try:
      os.rename(tmp, d)
    except OSError:  # another worker got there first: same bytes
      shutil.rmtree(tmp, ignore_errors=True)
  return tokenizer_lib.load(os.path.join(d, next(iter(files))))


def _tokenize(batch, run: str, files_ref):
  tok = _cached(run, "tokenizer", lambda: _load_tokenizer(_get(run, files_ref)))
  ids = tok.encode_batch([t if d == "" else "" for t, d in zip(batch["text"], batch["dup_of"])])
  batch["ids"] = np.asarray([np.asarray(x, np.int32).tobytes() for x in ids], dtype=object)
  return batch


def _tokenizer_files(path: str) -> dict:
  """{file name: bytes}, the tokenizer first, then its tokenizer_config.json if any."""
  files = {os.path.basename(path): open(path, "rb").read()}
  config = os.path.join(os.path.dirname(path), "tokenizer_config.json")
  if os.path.isfile(config):
    files["tokenizer_config.json"] = open(config, "rb").read()
  return files


# --- the run ----------------------------------------------------------------------------------------

def _user_error_in(e: BaseException) -> UserError | None:
  """The UserError a Ray task raised, out of the RayTaskError (and Ray Data's wrapping) around it."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    cause = getattr(e, "cause", None)
    if isinstance(cause, UserError):
      return cause
    e = cause if isinstance(cause, BaseException) else e.__cause__
  return None


def run(cfg, output: str, files: list, write_text: bool, address: str = "", timeout_s: float = 60.0,
        num_cpus: int = 0) -> dict:
  ray = _import_ray()
  started = connect(address, timeout_s, num_cpus)
  try:
    with _data_context():
      return _run(ray, cfg, output, write_text, files)
  except Exception as e:
    cause = _user_error_in(e)
    if cause is None:
      raise
    # The task's own one-line message, without the remote traceback or Ray Data's retry advice.
    raise UserError(str(cause).split("\n")[0]) from None
  finally:
    if started:
      ray.shutdown()


def _removal_rows(ds, phase: int):
  """Removed documents of one phase as (file, phase, pos, record): the removal log's sort keys."""
  return ds.filter(lambda r: r["pos"] >= 0 and not r["kept"]) \
      .map(lambda r: {"file": r["file"], "phase": phase, "pos": r["pos"], "removal": r["removal"]}).materialize()


def _run(ray, cfg, output: str, write_text: bool, files: list) -> dict:
  run_id = uuid.uuid4().hex  # worker caches hold this run's objects only
  parts = max(2, int(ray.cluster_resources().get("CPU", 2)))
  read = ray.data.from_items([{"file": i} for i in range(len(files))], override_num_blocks=min(len(files), 4 * parts))
  cleaned = read.flat_map(_read, fn_args=(files, cfg)).map(_clean, fn_args=(cfg,)).materialize()
  file_rows = cleaned.filter(lambda r: r["pos"] < 0).select_columns(["file", "sha256"]).take_all()
  sha256s = [r["sha256"] for r in sorted(file_rows, key=lambda r: r["file"])]
  stats = _stats(cleaned, cfg, parts)
  if stats["quality"]["docs_out"] == 0:
    raise UserError(f"no documents left after the quality filters ({stats['quality']['removed']}); "
                    f"relax config.quality")
  removed = [_removal_rows(cleaned, 0)]
  docs = cleaned.filter(lambda r: r["kept"]).drop_columns(["stats", "removal", "sha256"]).materialize()
  del cleaned  # the object store keeps what is still referenced: drop each corpus copy when done

  boiler = set()
  if cfg.boilerplate.enabled:
    threshold = prep_stages.boilerplate_threshold(cfg, docs.count())
    frequent = docs.flat_map(_line_keys, fn_args=(cfg,)).groupby("line", num_partitions=parts).count() \
        .filter(lambda r: r["count()"] >= threshold)
    boiler = {int(r["line"]) % (1 << 64) for r in frequent.take_all()}
  stripped = docs.map(_strip, fn_args=(cfg, run_id, ray.put(boiler))).materialize()
  del docs
  stats.update(_stats(stripped, cfg, parts))
  stats["boilerplate"]["counts"]["boilerplate_lines"] = len(boiler)
  removed.append(_removal_rows(stripped, 1))

  live = stripped.filter(lambda r: r["kept"]).drop_columns(["stats", "removal"]).materialize()
  del stripped
  if live.count() == 0:
    raise UserError("no documents left after boilerplate removal and decontamination")
  if cfg.exact_dedup.enabled:
    live = live.groupby("key", num_partitions=parts).map_groups(_exact_groups, batch_format="pyarrow")
  else:
    live = live.map(_live_row)
  live = live.materialize()
  if cfg.near_dedup.enabled:
    marked, clustering = _near_dedup(live.filter(lambda r: r["dup_of"] == ""), cfg, run_id, parts)
    live = marked.union(live.filter(lambda r: r["dup_of"] != "").map(_live_row)).materialize()
  stats.update(_dedup_stages(live, cfg))
  if cfg.near_dedup.enabled:
    stats["near_dedup"]["counts"].update(clustering["counts"])
    stats["near_dedup"]["cluster_sizes"] = clustering["cluster_sizes"]
  # In input order from here on (the context preserves order through maps and filters).
  live = live.drop_columns(["key", "sig"]).sort(["file", "pos"]).materialize()

  def kept_train_docs():
    train = live.filter(lambda r: r["dup_of"] == "" and prep_write.is_train(r["id"], cfg))
    for r in train.iter_rows():
      yield {"id": r["id"], "source": r["source"], "text": r["text"]}

  def documents(tokenizer_path):
    tokenized = live.map_batches(_tokenize, fn_args=(run_id, ray.put(_tokenizer_files(tokenizer_path))),
                                 batch_format="numpy", batch_size=64)
    for r in tokenized.iter_rows():
      doc = {"id": r["id"], "source": r["source"], "text": r["text"]}
      if r["dup_of"]:
        yield doc, (r["reason"], r["dup_of"]), None
      else:
        yield doc, None, np.frombuffer(r["ids"], np.int32)

  def removals():
    for r in removed[0].union(removed[1]).sort(["file", "phase", "pos"]).iter_rows():
      yield json.loads(r["removal"])
    drops = live.filter(lambda r: r["dup_of"] != "").select_columns(["id", "reason", "dup_of"])
    yield from prep_write.dedup_removals({r["id"]: (r["reason"], r["dup_of"]) for r in drops.iter_rows()})

  return prep_write.write_dataset(cfg, output, stats, prep_write.fingerprint(sha256s, cfg), len(files),
                                  kept_train_docs, documents, removals, write_text)
