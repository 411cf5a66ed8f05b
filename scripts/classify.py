"""Label text with a classifier trained by train.py (configs/classify.py).

  python scripts/classify.py --workdir=runs/spam --text="WIN a FREE cruise, reply now"
  python scripts/classify.py --workdir=runs/spam --input=new_mail.jsonl     # {"text"[, "text_pair"]} lines
  echo "Meeting moved to 3pm" | python scripts/classify.py --workdir=runs/spam

Prints one JSON line per text: its label and the probability the classifier
gives it, with the probabilities of every class. Text is encoded as the run's
training data was (tokenizer, pair layout, length).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import quiet_logs  # noqa: E402
from data.labelled import Example  # noqa: E402
from data.sources import jsonl_records  # noqa: E402
from errors import UserError  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A classification run's --workdir.", required=True)
_TEXT = flags.DEFINE_multi_string("text", [], "A text to label (repeatable).")
_INPUT = flags.DEFINE_string("input", None, "JSONL file of {\"text\"[, \"text_pair\"]} lines.")
_BEST = flags.DEFINE_bool("best", False, "Use the best checkpoint (config.eval.best_metric), not the newest.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Texts per model call.", lower_bound=1)


def _texts() -> list[tuple[str, str | None]]:
  if _TEXT.value:
    return [(t, None) for t in _TEXT.value]
  if _INPUT.value:
    out = []
    for where, record in jsonl_records(_INPUT.value):
      if isinstance(record, json.JSONDecodeError):
        raise UserError(f"{where}: not valid JSON ({record.msg})")
      if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise UserError(f"{where}: expected an object with a string \"text\"")
      out.append((record["text"], record.get("text_pair")))
    return out
  return [(line.rstrip("\n"), None) for line in sys.stdin if line.strip()]


def main(argv):
  del argv
  quiet_logs.apply()
  try:
    texts = _texts()
    if not texts:
      raise UserError("no text to label: give --text, --input or lines on stdin")
    from trainer.classifier import Classifier
    classifier = Classifier.load(_WORKDIR.value, best=_BEST.value, batch_size=_BATCH_SIZE.value)
    probs = classifier.probabilities([Example(f"text {i + 1}", t, p, "") for i, (t, p) in enumerate(texts)])
  except UserError as e:
    sys.exit(f"error: {e}")
  for (text, _), p in zip(texts, probs):
    k = int(p.argmax())
    print(json.dumps({"text": text[:80], "label": classifier.names[k], "probability": round(float(p[k]), 4),
                      "probabilities": {n: round(float(v), 4) for n, v in zip(classifier.names, p)}}))


if __name__ == "__main__":
  app.run(main)
