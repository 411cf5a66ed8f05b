"""Text normalization and the Gopher-style quality filters."""

import colorsys
import json.decoder
import stat
import textwrap

import pytest

from data import normalize, prose, quality
from errors import UserError


def _normalize(text, **overrides):
  cfg = normalize.default_config()
  cfg.update(overrides)
  return normalize.normalize(text, cfg)


def _reason(text, **overrides):
  cfg = quality.default_config()
  cfg.update(overrides)
  return quality.quality_reason(text, cfg)


# --- normalize ------------------------------------------------------------------

def test_nfc_composes_but_keeps_compatibility_forms():
  assert _normalize("cafe\u0301") == "caf\u00e9"
  assert _normalize("\ufb01le") == "\ufb01le"  # the "ﬁ" ligature is not canonical-equivalent to "fi"


def test_nfkc_folds_compatibility_forms():
  assert _normalize("\ufb01le x\u00b2", unicode_form="NFKC") == "file x2"
  assert _normalize("cafe\u0301", unicode_form="NFKC") == "caf\u00e9"


def test_unicode_form_can_be_skipped_and_is_validated():
  assert _normalize("cafe\u0301", unicode_form="") == "cafe\u0301"
  with pytest.raises(UserError, match="unicode_form"):
    _normalize("x", unicode_form="NFX")


def test_control_and_invisible_chars_are_removed():
  text = "a\u200bb\u200cc\u200dd\u2060e\ufefff\u00adg\x00h\x07i\x1bj\x7fk\x9fl\tm"
  assert _normalize(text) == "abcdefghijkl\tm"  # tab survives
  assert _normalize(text, remove_control_chars=False) == text


def test_line_breaks_and_unicode_spaces_are_unified():
  assert _normalize("a\r\nb\rc\u2028d\u2029e\x85f") == "a\nb\nc\nd\ne\nf"
  assert _normalize("a\u00a0b\u3000c\u2009d\u202fe") == "a b c d e"
  assert _normalize("a\r\nb", normalize_whitespace=False) == "a\r\nb"


def test_trailing_whitespace_and_blank_lines():
  assert _normalize("a  \nb\t\nc\u00a0") == "a\nb\nc"
  # Up to two blank lines (PEP 8's spacing between definitions) are kept; more become two.
  assert _normalize("a\n\n\nb") == "a\n\n\nb"
  assert _normalize("a\n\n \n\t\n\n\nb") == "a\n\n\nb"
  assert _normalize("\n \n\nbody\n\n  \n") == "body"


def test_indentation_and_inner_spaces_survive():
  code = "def f(x):\n    if x:\n        return  x  +  1\n\n\n  # end\n"
  assert _normalize(code) == code.rstrip("\n")
  assert _normalize("   first line is indented") == "   first line is indented"


def test_strip_html_keeps_text_and_drops_tags_and_scripts():
  html = ("<html><head><title>Page</title><style>body { color: red }</style>"
          "<script>var secret = 1;</script></head>"
          "<body><h1>Title</h1><p>Hello <b>world</b>.</p>\n\n\n\n\n<p>Bye</p><!-- a comment -->"
          "</body></html>")
  text = _normalize(html, strip_html=True)
  for kept in ("Page", "Title", "Hello", "world", "Bye"):
    assert kept in text
  for dropped in ("<", ">", "color", "secret", "comment"):
    assert dropped not in text
  assert "\n\n\n\n" not in text
  assert "<p>Bye</p>" in _normalize(html)  # off by default


# --- quality ---------------------------------------------------------------------

PROSE = """\
The old lighthouse at the end of the harbour was built in 1872, when the town still depended on fishing and the small boats came home long after dark. For almost a century a keeper lived in the narrow stone house beside it, climbing the spiral stairs each evening to light the lamp and trim the wick.

When the light was finally automated, the keeper's house stood empty for years. Local volunteers eventually repaired the roof, replaced the broken windows and opened a modest museum that now welcomes a few thousand visitors every summer. Children are especially fond of the brass fog horn, which still works and is sounded once a day at noon.

The museum is run entirely by donations. Anyone who would like to help can become a member, join one of the guided walks along the cliffs, or simply stop by the café and buy a slice of the famous apple cake."""

FRENCH = """\
Le conseil municipal s'est réuni mardi soir pour discuter du budget de l'année prochaine. Les habitants ont demandé davantage de pistes cyclables, une meilleure desserte des quartiers périphériques par les bus et la rénovation de la bibliothèque, fermée depuis deux ans. Le maire a promis une réponse détaillée avant la fin du mois."""


# Every rule off, so that one rule at a time can be measured against a threshold.
_ALL_OFF = dict(
    min_chars=0, max_chars=0, min_alpha_fraction=0, max_symbol_fraction=0, max_digit_fraction=0,
    min_alpha_word_fraction=0, max_duplicate_paragraph_fraction=0,
    max_duplicate_paragraph_char_fraction=0, max_duplicate_line_fraction=0,
    max_duplicate_line_char_fraction=0, max_top_ngram_char_fraction=0, max_dup_ngram_char_fraction=0,
    min_mean_word_length=0, max_mean_word_length=0, language_id=False, min_stop_words=0)


def _only(text, **rule):
  return _reason(text, **{**_ALL_OFF, **rule})


def test_defaults_are_gophers_thresholds():
  # Rae et al. 2021, appendix A.1.1 and table A1 (datatrove's defaults), but for the three
  # the module docstring justifies: duplicate lines, duplicate n-grams, word length.
  cfg = quality.default_config()
  assert (cfg.max_duplicate_paragraph_fraction, cfg.max_duplicate_paragraph_char_fraction) == (0.3, 0.2)
  assert (cfg.max_duplicate_line_fraction, cfg.max_duplicate_line_char_fraction) == (0.5, 0.2)
  top = {n: round(cfg.max_top_ngram_char_fraction - s, 4) for n, s in quality.TOP_NGRAM_STEPS.items()}
  assert top == {2: 0.2, 3: 0.18, 4: 0.16}
  dup = {n: round(cfg.max_dup_ngram_char_fraction - s, 4) for n, s in quality.DUP_NGRAM_STEPS.items()}
  assert dup == {5: 0.2, 6: 0.19, 7: 0.18, 8: 0.17, 9: 0.16, 10: 0.15}
  assert (cfg.min_alpha_word_fraction, cfg.max_symbol_fraction, cfg.min_stop_words) == (0.8, 0.1, 2)
  assert (cfg.min_mean_word_length, cfg.max_mean_word_length) == (3, 12)
  assert cfg.language_id and cfg.languages == "en"
  assert set(quality.THRESHOLDS) <= set(cfg)


def test_report_lists_each_threshold_and_its_source():
  from data import report
  cfg = quality.default_config().to_dict()
  section = "\n".join(report._quality_thresholds_section({**cfg, "enabled": True}))
  assert "| max_dup_ngram_char_fraction | 0.2 | this repo (Gopher table A1 and datatrove: dup_n_grams" in section
  assert "| min_stop_words | 2 | Gopher A.1.1" in section
  assert all(f"| {key} |" in section for key in quality.THRESHOLDS)
  assert report._quality_thresholds_section({**cfg, "enabled": False}) == []


def test_english_prose_passes_the_defaults():
  assert _reason(PROSE) is None


# --- each rule against values computed by hand ------------------------------------

def test_duplicate_ngram_chars_skip_the_first_occurrence_and_overlaps():
  # "a b c d e" again after "a b c d e": only the second copy (5 one-letter words) counts.
  assert quality.duplicate_ngram_chars("a b c d e a b c d e x".split(), 5) == 5
  # Seven equal words: the 5-gram at 0 is new, the one at 1 repeats it and covers words 1..5;
  # the scan then jumps to 6, where no 5-gram fits. Overlaps are not charged twice.
  assert quality.duplicate_ngram_chars(["ww"] * 7, 5) == 10
  assert quality.duplicate_ngram_chars("a b c d e f".split(), 5) == 0


def test_duplicate_ngram_rule_divides_by_all_characters():
  # 11 five-letter words and 10 spaces: 65 characters; the repeated 5-gram covers 25: 0.385.
  text = "aaaaa bbbbb ccccc ddddd eeeee zzzzz aaaaa bbbbb ccccc ddddd eeeee"
  assert len(text) == 65
  assert _only(text, max_dup_ngram_char_fraction=0.38) == "duplicate_ngrams"
  assert _only(text, max_dup_ngram_char_fraction=0.39) is None


def test_duplicate_ngram_rule_uses_the_longer_ngram_thresholds():
  # 12 four-letter words + 11 spaces = 59 chars; "pppp ... vvvv" (6 words) repeats: the 5-gram
  # copy covers 20 word chars (0.339), the 6-gram copy 24 (0.407). Knob 0.4: 5-gram limit 0.40
  # passes, 6-gram limit 0.39 fails.
  text = "pppp qqqq rrrr ssss tttt vvvv pppp qqqq rrrr ssss tttt vvvv"
  assert len(text) == 59
  assert quality.duplicate_ngram_chars(text.split(), 5) == 20
  assert quality.duplicate_ngram_chars(text.split(), 6) == 24
  assert _only(text, max_dup_ngram_char_fraction=0.4) == "duplicate_ngrams"
  assert _only(text, max_dup_ngram_char_fraction=0.46) is None  # 6-gram limit 0.45 > 0.407


def test_top_ngram_rule():
  # 2-grams: ("xx", "yy") twice, 5 characters each with its space: 10 of 17 = 0.588.
  # No 3-gram repeats.
  text = "xx yy aa xx yy bb"
  assert quality.top_ngram_chars(text.split(), 2) == 10
  assert quality.top_ngram_chars(text.split(), 3) == 0
  assert _only(text, max_top_ngram_char_fraction=0.58) == "top_ngram"
  assert _only(text, max_top_ngram_char_fraction=0.59) is None
  # A most common n-gram seen once is no repetition.
  assert quality.top_ngram_chars("one two three".split(), 2) == 0


def test_duplicate_line_rules():
  # Non-empty lines: a1, bb, a1, cc. One duplicate of four (0.25); its 2 characters
  # of the text's 12 (0.167).
  text = "a1\nbb\na1\n\ncc"
  assert len(text) == 12
  assert _only(text, max_duplicate_line_fraction=0.24) == "duplicate_lines"
  assert _only(text, max_duplicate_line_fraction=0.26) is None
  assert _only(text, max_duplicate_line_char_fraction=0.16) == "duplicate_line_chars"
  assert _only(text, max_duplicate_line_char_fraction=0.17) is None


def test_duplicate_paragraph_rules():
  # Paragraphs: "p one", "p two", "p one". One duplicate of three (0.333); 5 of 19 chars (0.263).
  text = "p one\n\np two\n\np one"
  assert len(text) == 19
  assert _only(text, max_duplicate_paragraph_fraction=0.33) == "duplicate_paragraphs"
  assert _only(text, max_duplicate_paragraph_fraction=0.34) is None
  assert _only(text, max_duplicate_paragraph_char_fraction=0.26) == "duplicate_paragraph_chars"
  assert _only(text, max_duplicate_paragraph_char_fraction=0.27) is None


def test_alphabetic_word_rule():
  # Words with a letter: "abc", "d6" -- 2 of 5 (0.4).
  text = "abc 123 4.5 d6 !!"
  assert _only(text, min_alpha_word_fraction=0.41) == "low_alpha_words"
  assert _only(text, min_alpha_word_fraction=0.39) is None


def test_symbol_to_word_rule():
  # 2 hashes, 11 words (0.18); 1 ellipsis + 1 "…" per 11 words likewise.
  for text in ("#a #b c d e f g h i j k", "a... b… c d e f g h i j k"):
    assert _only(text, max_symbol_fraction=0.18) == "high_symbol"
    assert _only(text, max_symbol_fraction=0.19) is None


def test_stop_word_count():
  assert quality.stop_word_count(quality._TOKEN.findall("The cat, and THE dog.")) == 2
  assert quality.stop_word_count(quality._TOKEN.findall("To be, or not to be")) == 2
  assert quality.stop_word_count(quality._TOKEN.findall("the the the")) == 1
  assert quality.stop_word_count(quality._TOKEN.findall("theory thereby tobe")) == 0


def test_stop_word_rule_is_for_english_only():
  # English, with one stop word ("the"): fails at 2, passes at 1.
  text = "Compile the regular expression pattern into a regex object for matching strings quickly."
  assert quality.identify_language(text)[0] == "en"
  assert _only(text, language_id=True, languages="", min_language_confidence=0,
               min_stop_words=2) == "stop_words"
  assert _only(text, language_id=True, languages="", min_language_confidence=0, min_stop_words=1) is None
  # French has none of the English stop words, and is not held to them.
  assert _reason(FRENCH, languages="") is None
  assert _reason(FRENCH, languages="", language_id=False) is None


def test_language_filter():
  assert _reason(FRENCH) == "language"  # English by default
  assert _reason(FRENCH, languages="en,fr") is None
  assert _reason(FRENCH, languages=" fr , en ") is None
  assert _reason(PROSE, languages="fr") == "language"
  assert _reason(FRENCH, language_id=False) is None
  with pytest.raises(UserError, match="xx"):
    _reason(PROSE, languages="en,xx")


def test_language_confidence_threshold():
  # py3langid's best guess is English, but only with probability ~0.33.
  text = "Setup and install notes"
  assert quality.identify_language(text)[0] == "en"
  assert _reason(text, min_chars=0) == "language"
  assert _reason(text, min_chars=0, min_language_confidence=0, min_stop_words=0) is None


# --- junk -------------------------------------------------------------------------

def _letter_soup(seed, syllables):
  import random
  rng = random.Random(seed)
  if syllables:  # pronounceable: consonant-vowel pairs
    word = lambda: "".join(rng.choice("bcdfghklmnprstvwz") + rng.choice("aeiou")  # noqa: E731
                           for _ in range(rng.randint(1, 4)))
  else:
    word = lambda: "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9)))  # noqa: E731
  sentences = (" ".join(word() for _ in range(rng.randint(6, 14))).capitalize() + "."
               for _ in range(12))
  return " ".join(sentences)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("syllables", [False, True])
def test_letter_soup_is_removed(seed, syllables):
  text = _letter_soup(seed, syllables)
  # It passes every ratio and repetition rule: only language id and stop words catch it.
  assert _reason(text, language_id=False) is None
  assert _reason(text) in ("language", "stop_words")


SYMBOL_SOUP = [
    "==> ++ -- ** ## :: || && %% $$ @@ !! ?? << >> [] {} () ;; ,, .. ~~ ^^ " * 4,
    "»»» ◆◆ ★☆★ ▲▼ ♦♣♠ →→ ←← ⇒⇒ ∴∵ ≈≈ ≠≠ ±± ×× ÷÷ ∞∞ §§ ¶¶ †‡ ‰‰ " * 4,
    "#tbt #love #instagood #photooftheday #fashion #beautiful #happy #cute #like4like #follow",
    "x = {a: [1, 2], b: (3, 4)} ; y = x[a][0] + x[b][1] ; z = y * 2 ; w = z ** 2 - y / 3 ; " * 3,
    "... ... … ... wait ... … ... for ... it ... … ... now ... ... …",
    "|----|----|----|\n| 12 | 34 | 56 |\n|----|----|----|\n| 78 | 90 | 12 |\n|----|----|----|",
]


@pytest.mark.parametrize("text", SYMBOL_SOUP)
def test_symbol_soup_is_removed(text):
  assert _reason(text) in ("low_alpha", "high_symbol", "high_digit", "low_alpha_words",
                           "duplicate_lines", "language")


# --- false positives on real, distinct text ---------------------------------------

DIALOGUE = [
    "MARGARET: You are late again, and the soup has gone cold.\nTHOMAS: I had to stop at the mill to see "
    "about the wheel.\nMARGARET: The wheel can wait. Your supper cannot.\nTHOMAS: Then I will eat it cold "
    "and be grateful.",
    "ALICE: Have you seen the letter that came this morning?\nBEN: The one with the red seal? I left it on "
    "the mantel.\nALICE: It is from my brother. He writes that he is coming home.\nBEN: After eleven years? "
    "Then we had better air out the spare room.",
    "INSPECTOR: Where were you at nine o'clock on Tuesday evening?\nGARDENER: In the greenhouse, sir, "
    "potting the last of the geraniums.\nINSPECTOR: Alone?\nGARDENER: With the cat, if that counts for "
    "anything.\nINSPECTOR: It does not, I am afraid.",
    "CAPTAIN: Take in the topsail and bring her two points to windward.\nMATE: Aye, sir. The glass is "
    "falling fast.\nCAPTAIN: I have seen it. We will ride it out with the storm jib.\nMATE: The men are "
    "tired, sir.\nCAPTAIN: So am I. Tell them to hold on a little longer.",
    "MOTHER: Did you finish your lessons before you went out to play?\nCHILD: Nearly all of them.\n"
    "MOTHER: Nearly is not the same as all.\nCHILD: I only have the sums left, and they are easy.\n"
    "MOTHER: Then they will not take you long. Sit down.",
    "DOCTOR: How long have you had the cough?\nPATIENT: Since the first frost, I think. It gets worse at "
    "night.\nDOCTOR: Any fever with it?\nPATIENT: Only once, and that passed in a day.\nDOCTOR: Rest, warm "
    "drinks, and come back to me if it lasts another week.",
    "JUDGE: The witness will answer the question.\nWITNESS: I did see him, your honour, but only from the "
    "back.\nJUDGE: Then how can you be sure it was the defendant?\nWITNESS: He walks with a limp, and so "
    "did the man I saw.\nJUDGE: That will do for now.",
    "SARAH: I don't think we should go to the party tonight.\nDAVID: Why not? You bought a new dress for it.\n"
    "SARAH: Because your cousin will be there, and he always starts an argument.\nDAVID: Then we will "
    "leave early. I promise.",
    "BAKER: Fresh loaves, still warm from the oven!\nCUSTOMER: I will take two of the brown and one of "
    "the white.\nBAKER: That comes to a shilling, madam.\nCUSTOMER: Last week it was tenpence.\nBAKER: Last "
    "week the flour was cheaper, I am sorry to say.",
    "TEACHER: Who can tell me the capital of Portugal?\nPUPIL: Is it Madrid, miss?\nTEACHER: That is the "
    "capital of Spain. Try again.\nPUPIL: Lisbon, then.\nTEACHER: Very good. And which river flows "
    "through it?\nPUPIL: I have no idea at all, miss.",
    "KING: Bring me the map of the northern provinces.\nCHANCELLOR: It is here, my lord, with the new "
    "borders marked in ink.\nKING: The river has moved since my father's day.\nCHANCELLOR: Rivers do "
    "that, sire. Treaties, alas, do not.",
    "EMMA: You promised to write to me every week.\nJAMES: And I did, for the first month.\nEMMA: What "
    "happened after that?\nJAMES: The post office burned down, and then I lost your address.\nEMMA: That "
    "is the worst excuse I have ever heard.",
    "FARMER: The rain has flattened half the barley.\nNEIGHBOUR: Mine too. We will have to cut it by hand.\n"
    "FARMER: With what men? Mine have all gone to the city.\nNEIGHBOUR: Then we will help each other, "
    "as our fathers used to do.",
    "GUARD: Halt! Who goes there?\nTRAVELLER: A friend, with a pass from the governor.\nGUARD: Show it to "
    "me by the lantern.\nTRAVELLER: Here. You will see the seal at the bottom.\nGUARD: It is in order. "
    "Pass, and be quick about it.",
    "LUCY: Do you believe in ghosts?\nPETER: Not in daylight.\nLUCY: And at night?\nPETER: At night I "
    "believe in everything, which is why I keep a candle by the bed.\nLUCY: You are more honest than "
    "most people, I will say that for you.",
    "MERCHANT: These silks came all the way from Samarkand.\nLADY: They look very much like the ones "
    "from the market in town.\nMERCHANT: Ah, but feel the weight of this one, madam.\nLADY: I feel the "
    "weight of your price, and that is enough.",
    "SOLDIER: How far to the next village?\nSHEPHERD: Three miles, if you follow the stream. Five if you "
    "take the road.\nSOLDIER: Why would anyone take the road, then?\nSHEPHERD: Because the stream has "
    "a bull beside it, and he does not like strangers.",
    "AUNT: You have grown so tall since the summer!\nNEPHEW: Everyone says that, aunt.\nAUNT: Because it "
    "is true. Soon you will be taller than your father.\nNEPHEW: He says that is not difficult, and then "
    "he laughs at his own joke.",
    "CLERK: Your name, please, and the purpose of your visit.\nVISITOR: Henry Walsh. I have come to see "
    "the director about the bridge contract.\nCLERK: He is with the minister until noon.\nVISITOR: Then "
    "I will wait, with your permission.",
    "POET: I have written a sonnet about the moon.\nCRITIC: Another one? There must be ten thousand of "
    "those already.\nPOET: Mine is different. The moon in it is unhappy.\nCRITIC: That, at least, I can "
    "understand. Read it to me.",
    "NURSE: You should try to sleep now.\nOLD MAN: I have slept enough for one lifetime.\nNURSE: The "
    "doctor said that you need rest.\nOLD MAN: The doctor is twenty-five years old. Sit with me and tell "
    "me about the world outside.",
    "HELEN: The train leaves at seven. Have you packed?\nROBERT: Almost. I cannot find my other boot.\n"
    "HELEN: It is under the bed, where you kicked it last night.\nROBERT: How do you always know these "
    "things?\nHELEN: Someone has to.",
    "STRANGER: Is this the road to Bramley?\nINNKEEPER: It was, until the bridge fell in.\nSTRANGER: And "
    "now?\nINNKEEPER: Now it is the road to the river, and you will have to find a boat.\nSTRANGER: Is "
    "there a boatman?\nINNKEEPER: My brother. He charges double after dark.",
    "WIFE: The roof is leaking again over the kitchen.\nHUSBAND: I will fix it on Saturday.\nWIFE: You "
    "said that last Saturday, and the one before.\nHUSBAND: This time I mean it. I have even bought the "
    "nails.",
    "PRINCE: Tell me honestly, what do the people say of me?\nFOOL: That you ride well and listen badly.\n"
    "PRINCE: And what do they say of my father?\nFOOL: That he listens well and has not ridden in "
    "years. Between the two of you, they would have one good king.",
    "STUDENT: Professor, I could not finish the essay.\nPROFESSOR: What stopped you?\nSTUDENT: I found that "
    "I disagreed with my own argument halfway through.\nPROFESSOR: That is the most promising thing a "
    "student has said to me this term. Bring me what you have.",
    "FISHERMAN: Nothing in the nets again today.\nWIFE: Then we will have bread and cheese, and be glad of "
    "it.\nFISHERMAN: The fish have gone north, the old men say.\nWIFE: Then perhaps we should go north "
    "with them.",
    "ACTOR: I cannot remember the second act at all.\nDIRECTOR: We open tomorrow night.\nACTOR: I know. "
    "That is why I mention it.\nDIRECTOR: Then we will rehearse until you do, and nobody sleeps.",
    "GIRL: Why is the sea salty?\nGRANDFATHER: Because of all the tears of the sailors' wives, or so my "
    "mother told me.\nGIRL: Is that true?\nGRANDFATHER: No, but it is a better story than the one about "
    "rocks and rivers.",
    "MAYOR: The fair will go ahead, rain or shine.\nCOUNCILLOR: The field is already under water.\nMAYOR: "
    "Then we will hold it in the church hall.\nCOUNCILLOR: With the cattle?\nMAYOR: Without the cattle, "
    "I think, on reflection.",
]


def _removed_fraction(texts, cfg):
  cfg_norm = normalize.default_config()
  reasons = [quality.quality_reason(normalize.normalize(t, cfg_norm), cfg) for t in texts]
  return sum(r is not None for r in reasons) / len(texts), [r for r in reasons if r]


def test_literary_dialogue_is_kept():
  assert len(set(DIALOGUE)) == len(DIALOGUE) == 30
  # One play: every scene in turn, speaker names repeated all through.
  play = "\n\n".join(DIALOGUE)
  fraction, reasons = _removed_fraction(DIALOGUE + [play], quality.default_config())
  assert fraction < 0.01, reasons


def _prose_docstrings(min_words=50):
  """Docstrings of the standard library that read as prose once their code examples and
  list bullets are set aside (data/prose.py): at least Gopher's 50 words of it, and no option
  lists, indented tables, ASCII diagrams or grammars outside marked code blocks."""
  import ast
  from data import corpus
  found = []
  for path in corpus.stdlib_files():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        continue
      doc = ast.get_docstring(node)
      text = prose.prose(doc or "")
      if len(text.split()) < min_words or " -- " in text:
        continue
      lines = [line for line in text.splitlines() if line.strip()]
      if sum(not line.startswith((" ", "\t", "-", "*", "|")) for line in lines) >= 0.9 * len(lines):
        found.append(doc)
  return found


def test_technical_documentation_is_kept():
  docs = _prose_docstrings()
  assert len(docs) > 800
  fraction, reasons = _removed_fraction(docs, quality.default_config())
  # Measured 0.90% (8 of 887, CPython 3.11): 5 short docstrings whose one phrase makes up a
  # fifth of them (top 2-gram), 2 lists of names or options (stop words), an ABNF grammar
  # (words without letters). Gopher's 0.15 duplicate 5-grams removed 3 more (json).
  assert fraction < 0.01, reasons
  # The 101 of them with code examples or lists: judged whole, 13 fail (words without
  # letters, repeated example lines); judged by their prose, 1.
  marked = [d for d in docs if prose.prose(d) != d]
  assert len(marked) > 80
  whole = quality.default_config()
  whole.read_prose = False
  assert _removed_fraction(marked, whole)[0] > 0.1
  assert _removed_fraction(marked, quality.default_config())[0] < 0.02


def test_long_identifiers_pass_the_word_length_rule_and_url_lists_do_not():
  cfg = quality.default_config()
  rule = dict(min_mean_word_length=cfg.min_mean_word_length, max_mean_word_length=cfg.max_mean_word_length)
  # As the ssl module documents its constants: mean word length 11.2, over Gopher's 10.
  constants = ("Alert descriptions, exported as constants:\n" + "\n".join(
      f"ALERT_DESCRIPTION_{name} {what}" for name, what in (
          ("BAD_CERTIFICATE_HASH_VALUE", "on a bad hash"), ("CERTIFICATE_EXPIRED", "when expired"),
          ("HANDSHAKE_FAILURE", "if handshakes fail"), ("UNKNOWN_CA", "for unknown issuers"),
          ("DECODE_ERROR", "on bad syntax"), ("PROTOCOL_VERSION", "for old versions"))))
  assert 10 < sum(map(len, constants.split())) / len(constants.split()) < 12
  assert _only(constants, **rule) is None
  assert _only(constants, **{**rule, "max_mean_word_length": 10}) == "word_length"
  urls = " ".join(f"https://example.com/assets/{i:04d}/image-{i}.png" for i in range(30))
  assert _only(urls, **rule) == "word_length"


def test_play_with_speaker_lines_is_kept_and_repeated_lines_are_not():
  # A scene as printed plays have it: each speech under its speaker's name, on a line of
  # its own. 6 of 18 lines repeat an earlier one (0.33, over Gopher's 0.3), a few characters.
  speeches = ["Do, if it will not stand.", "'Tis here!", "'Tis gone!", "It was about to speak, when the cock crew.",
              "And then it started, like a guilty thing upon a fearful summons.",
              "It faded on the crowing of the cock, and we saw it no more that night.",
              "Let us impart what we have seen to-night unto young Hamlet; for, upon my life, this spirit, "
              "dumb to us, will speak to him.", "Let's do it, I pray; and I this morning know where we "
              "shall find him most conveniently.", "Break we our watch up, and by my advice let us go."]
  speakers = ["Horatio.", "Bernardo.", "Horatio.", "Bernardo.", "Horatio.", "Marcellus.", "Horatio.", "Marcellus.",
              "Horatio."]
  scene = "\n\n".join(f"{who}\n{says}" for who, says in zip(speakers, speeches))
  lines = [line for line in scene.split("\n") if line]
  assert quality.duplicates(lines)[0] / len(lines) > 0.3
  assert _reason(scene) is None
  assert _reason(scene, max_duplicate_line_fraction=0.3) == "duplicate_lines"  # Gopher's value
  # Boilerplate repeated line by line still fails on its characters.
  assert _reason("Click here to subscribe to our newsletter today!\n" * 40) in ("duplicate_lines",
                                                                                 "duplicate_line_chars")


# --- code keeps its own profile ----------------------------------------------------

def test_stdlib_source_passes_the_code_profile():
  import inspect
  from configs.data import stdlib
  code_cfg = stdlib.get_config().quality
  assert not code_cfg.language_id  # code is no language
  sources = [normalize.normalize(inspect.getsource(module), normalize.default_config())
             for module in (textwrap, json.decoder, colorsys, stat)]
  assert [quality.quality_reason(s, code_cfg) for s in sources] == [None] * 4
  # The prose defaults reject operator-heavy modules: the profile matters.
  assert [_reason(s) for s in sources[2:]] == ["low_alpha_words"] * 2


def test_documents_without_words_are_too_short():
  assert _reason("", min_chars=0) == "too_short"
  assert _reason(" \n\t " * 100, min_chars=0) == "too_short"


def test_large_document_is_checked_in_linear_time():
  # ~1 MB of distinct lines of random words: slow if any check were quadratic.
  import random
  rng = random.Random(0)
  vocab = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9)))
           for _ in range(5000)]
  text = "\n".join(" ".join(rng.choices(vocab, k=12)) + " the and." for _ in range(12_000))
  assert len(text) > 1_000_000
  assert _reason(text) == "too_long"
  assert _reason(text, max_chars=0, language_id=False) is None


def test_prose_sets_aside_marked_code_and_bullets_but_not_indented_prose():
  doc = textwrap.dedent("""\
      Decorate each overload, for example::

          @overload
          def f(x: None) -> None: ...

      Then the prose goes on.
      >>> f(None)
      None

      - first item
      * second item
      2) third item
      ```python
      x = {}
      ```
      ::

          raw block
      Back to prose:
        an indented paragraph that no marker makes code.""")
  assert prose.prose(doc).split("\n") == [
      "Decorate each overload, for example:", "", "", "Then the prose goes on.", "",
      "first item", "second item", "third item", "", "Back to prose:",
      "  an indented paragraph that no marker makes code."]


def test_code_examples_do_not_fail_prose_rules_and_all_code_is_judged_whole():
  listing = "    @overload\n    def utf8(value: None) -> None: ...\n" * 3
  doc = (f"Decorator for overloaded functions. In a stub file, place the definitions for the same "
         f"function in a row, each decorated with the decorator. For example::\n\n{listing}\nThe "
         f"overloads of a function can be retrieved at run time with the function that returns them.")
  assert _reason(doc) is None
  assert _reason(doc, read_prose=False) == "duplicate_line_chars"  # the example, repeated
  # With under `min_chars` of prose, the document is judged whole, code and all.
  assert _reason(f"Example::\n\n{listing * 5}") == _reason(f"Example::\n\n{listing * 5}", read_prose=False) != None
