"""Write a text-to-text task from the standard library: a function's code -> its docstring's first sentence.

  python scripts/make_stdlib_summaries.py --output=datasets/stdlib_summaries

Writes OUTPUT.jsonl ({"input": code, "target": summary}: fine-tune on it with
scripts/prepare_seq2seq.py and train.objective="seq2seq") and, from modules held
out whole, OUTPUT_eval.jsonl with the task spec OUTPUT_eval.yaml for
scripts/evaluate.py --tasks=OUTPUT_eval.yaml (ROUGE, BLEU, exact match). The
docstring is removed from the code, so the model cannot copy it. No download:
the running interpreter's standard library is parsed with `ast`.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import yaml  # noqa: E402
from absl import app, flags  # noqa: E402

from data import corpus, stdlib_chat  # noqa: E402

_OUTPUT = flags.DEFINE_string("output", None, "Path prefix of the files to write.", required=True)
_EVAL = flags.DEFINE_float("eval_fraction", 0.1, "Share of modules held out for evaluation.")
_EVAL_LIMIT = flags.DEFINE_integer("eval_examples", 200, "Evaluation examples kept (the first N).")
_PREFIX = flags.DEFINE_string("prefix", "summarize: ", "The task prefix prepare_seq2seq.py puts before inputs.")



def _write_jsonl(path: str, rows: list[dict]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
  os.replace(tmp, path)


def main(argv):
  del argv
  train, held = stdlib_chat.summaries(corpus.stdlib_files(), _EVAL.value)
  held = held[:_EVAL_LIMIT.value]
  os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
  _write_jsonl(_OUTPUT.value + ".jsonl", train)
  _write_jsonl(_OUTPUT.value + "_eval.jsonl", [{"input": r["input"], "reference": r["target"]} for r in held])
  spec = {"type": "generation", "description": "Summarize a standard-library function in one sentence: its code "
          "(docstring removed) in, the docstring's first sentence out.",
          "data": os.path.basename(_OUTPUT.value) + "_eval.jsonl",
          "prompt": _PREFIX.value.replace("{", "{{").replace("}", "}}") + "{input}", "max_new_tokens": 32, "stop": []}
  tmp = _OUTPUT.value + "_eval.yaml.tmp"
  with open(tmp, "w") as f:
    yaml.safe_dump(spec, f, sort_keys=False)
  os.replace(tmp, _OUTPUT.value + "_eval.yaml")
  print(json.dumps({"train": len(train), "eval": len(held), "output": _OUTPUT.value}))


if __name__ == "__main__":
  app.run(main)
