"""report.md: what every stage of a data preparation run kept and removed."""

import json

from data import quality

STAGE_TITLES = {
    "read": "read", "normalize": "normalization", "quality": "quality filters", "pii": "PII scrubbing",
    "boilerplate": "boilerplate removal", "decontam": "decontamination", "exact_dedup": "exact deduplication",
    "near_dedup": "near-duplicate deduplication",
}


def _n(x) -> str:
  return f"{x:,.0f}"


def _verified_by(counts: dict, verify: str) -> str:
  if verify != "exact":
    return "the MinHash estimate decided every pair"
  return (f"the estimate decided {_n(counts['candidate_pairs'] - counts.get('exact_comparisons', 0))}, "
          f"shingle sets the {_n(counts.get('exact_comparisons', 0))} near the threshold")


def _near_dedup_section(s: dict | None, verify: str = "exact") -> list[str]:
  """LSH banding, candidates, verified edges and cluster sizes: what near-dedup compared and joined."""
  if not s or "cluster_sizes" not in s:
    return []
  c = s["counts"]
  lines = ["", "## Near-duplicate clusters", "",
           f"LSH with {c['lsh_bands']} bands x {c['lsh_rows']} rows: {_n(c['candidate_pairs'])} candidate pairs, "
           f"{_n(c['verified_edges'])} verified (Jaccard >= threshold; {_verified_by(c, verify)}), {_n(c['clusters'])} clusters "
           f"(largest {_n(c['max_cluster_size'])}); every member but the smallest id removed "
           f"({_n(c['documents_removed'])} documents).", "",
           "| cluster size | clusters |", "| ---: | ---: |"]
  lines += [f"| {size} | {_n(n)} |" for size, n in sorted(s["cluster_sizes"].items(), key=lambda kv: int(kv[0]))]
  return lines


def _quality_thresholds_section(q: dict | None) -> list[str]:
  """Each quality rule's threshold as run, and where its default comes from (data/quality.py)."""
  if not q or not q.get("enabled"):
    return []
  lines = ["", "## Quality thresholds", "", "0 disables a rule.", "",
           "| setting | value | source of the default |", "| --- | --- | --- |"]
  lines += [f"| {key} | {q.get(key)!r} | {source} |" for key, source in quality.THRESHOLDS.items()]
  return lines


def write(path: str, meta: dict, stats: dict) -> None:
  chars_per_token = meta["chars_per_token_train"]
  tok = lambda chars: _n(chars / chars_per_token)  # noqa: E731
  lines = ["# Data preparation report", "",
           f"- sources: {json.dumps(meta['sources'])}",
           f"- input files: {meta['num_input_files']}; fingerprint `{meta['inputs_sha256'][:16]}`",
           f"- tokenizer: `{meta['tokenizer']}` ({meta['tokenizer_kind']}, {meta['vocab_size']:,} pieces)", "",
           "## Stages", "",
           f"Tokens before the final split are estimated at {chars_per_token:.2f} characters per token "
           f"(measured on the train split).", "",
           "| stage | docs in | docs out | removed | chars in | chars out | ~tokens in | ~tokens out |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for name, title in STAGE_TITLES.items():
    s = stats.get(name)
    if not s or s["docs_in"] == 0:
      lines.append(f"| {title} | (disabled) | | | | | | |")
      continue
    lines.append(f"| {title} | {_n(s['docs_in'])} | {_n(s['docs_out'])} | {_n(s['docs_in'] - s['docs_out'])} | "
                 f"{_n(s['chars_in'])} | {_n(s['chars_out'])} | {tok(s['chars_in'])} | {tok(s['chars_out'])} |")

  lines += ["", "## Removed, by reason", "", "| stage | reason | documents |", "| --- | --- | ---: |"]
  for name, title in STAGE_TITLES.items():
    for reason, n in sorted(stats.get(name, {}).get("removed", {}).items()):
      lines.append(f"| {title} | {reason} | {_n(n)} |")

  lines += ["", "## Counts", "", "| stage | what | count |", "| --- | --- | ---: |"]
  for name, title in STAGE_TITLES.items():
    for what, n in sorted(stats.get(name, {}).get("counts", {}).items()):
      lines.append(f"| {title} | {what} | {_n(n)} |")

  lines += _near_dedup_section(stats.get("near_dedup"), meta["config"]["near_dedup"].get("verify", "exact"))
  lines += _quality_thresholds_section(meta.get("config", {}).get("quality"))

  lines += ["", "## Splits", "",
            "| split | docs | chars | tokens | tokens per word | bytes per token | shards |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for split, s in meta["splits"].items():
    lines.append(f"| {split} | {_n(s['num_docs'])} | {_n(s['chars'])} | {_n(s['num_tokens'])} | "
                 f"{s['tokens_per_word']:.3f} | {s['bytes_per_token']:.3f} | {len(s['files'])} |")

  lines += ["", "## Examples of removed documents", ""]
  for name, title in STAGE_TITLES.items():
    for reason, examples in sorted(stats.get(name, {}).get("examples", {}).items()):
      lines.append(f"### {title}: {reason}")
      for ex in examples:
        dup = f" (duplicate of `{ex['duplicate_of']}`)" if "duplicate_of" in ex else ""
        snippet = ex["text"][:300].replace("```", "'''")
        lines += ["", f"`{ex['id']}`{dup}", "", "```", snippet, "```"]
      lines.append("")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
