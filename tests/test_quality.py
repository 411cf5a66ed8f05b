"""Text normalization and the Gopher-style quality filters."""

import json.decoder
import textwrap

import pytest

from data import normalize, quality
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


# --- quality ----------------------------------------------------------------------

PROSE = """\
The old lighthouse at the end of the harbour was built in 1872, when the town still depended on fishing and the small boats came home long after dark. For almost a century a keeper lived in the narrow stone house beside it, climbing the spiral stairs each evening to light the lamp and trim the wick.

When the light was finally automated, the keeper's house stood empty for years. Local volunteers eventually repaired the roof, replaced the broken windows and opened a modest museum that now welcomes a few thousand visitors every summer. Children are especially fond of the brass fog horn, which still works and is sounded once a day at noon.

The museum is run entirely by donations. Anyone who would like to help can become a member, join one of the guided walks along the cliffs, or simply stop by the café and buy a slice of the famous apple cake."""

FRENCH = """\
Le conseil municipal s'est réuni mardi soir pour discuter du budget de l'année prochaine. Les habitants ont demandé davantage de pistes cyclables, une meilleure desserte des quartiers périphériques par les bus et la rénovation de la bibliothèque, fermée depuis deux ans. Le maire a promis une réponse détaillée avant la fin du mois."""

# Each document fails exactly one filter: it fails it under `enable` (added to
# the defaults) and passes everything once `disable` turns that filter off.
CASES = {
    "too_short": ("Too short to keep.", {}, {"min_chars": 0}),
    "too_long": (PROSE, {"max_chars": 200}, {"max_chars": 0}),
    "low_alpha": (
        "Legend for the chart: <<==>> merge, -->>-- push, <<--<< pull, ==>>== forward, "
        "~~~~~~ unknown, $$$$$$ cost, ++++++ gain, ------ loss, ****** key, %%%%%% rate, "
        "&&&&&& link, ^^^^^^ peak.",
        {}, {"min_alpha_fraction": 0}),
    "high_symbol": (
        "Loving the new release today #python #jax #tpu #research #opensource "
        "#deeplearning #training #weekend",
        {}, {"max_symbol_fraction": 0}),
    "high_digit": (
        "Invoice 20231104 shipped 77812345 units to warehouse 99120034 on schedule, "
        "tracking 55512309 and 44401236 confirmed.",
        {}, {"max_digit_fraction": 0}),
    # Short repeated lines: many duplicate lines, few duplicate characters.
    "duplicate_lines": (
        "Great article, thanks for writing it up so clearly.\nReply\n"
        "I tried this recipe last weekend and the bread came out perfect.\nReply\n"
        "Does anyone know whether the museum is open on public holidays?\nReply\n"
        "My grandmother used to tell a very similar story about the war.\nReply\n"
        "Shipping took three weeks, but the quality made up for the wait.\nReply\n",
        {}, {"max_duplicate_line_fraction": 0}),
    # A set list with four songs played again, each between different songs
    # so that no 5-gram repeats: few duplicate lines, many duplicate characters.
    "duplicate_line_chars": (
        "Set list for the Friday show\n" + "\n".join([
            "Summer Rain Falls Softly", "Seven Bridges Across Town", "Northern Lights Over Harbor",
            "Lanterns Along Quiet Rivers", "Velvet Morning Coffee Blues", "Paper Planes And Promises",
            "Broken Compass Heading Home", "Golden Fields Before Harvest", "Northern Lights Over Harbor",
            "Whispering Pines At Dusk", "Broken Compass Heading Home", "Copper Kettle Kitchen Song",
            "Summer Rain Falls Softly", "Velvet Morning Coffee Blues"]),
        {}, {"max_duplicate_line_char_fraction": 0}),
    "top_ngram": (
        "We use machine learning to forecast the weather.\n"
        "Banks apply machine learning when flagging fraud.\n"
        "Doctors trust machine learning for reading scans.\n"
        "Farmers adopt machine learning to plan harvests.\n",
        {}, {"max_top_ngram_char_fraction": 0}),
    "duplicate_ngrams": (
        "The committee met on Tuesday to review the proposal for the new library. After a long "
        "discussion, members agreed that the building should open early next spring. Several "
        "residents spoke in favour, noting that the old branch had been closed for years. The "
        "treasurer warned that costs could rise if construction was delayed again. In the end the "
        "vote was unanimous, and the chair repeated that the building should open early next "
        "year as planned.",
        {}, {"max_dup_ngram_char_fraction": 0}),
    "word_length": (
        "Counterrevolutionaries notwithstanding, incomprehensibilities characterize "
        "institutionalization's bureaucratization internationally.",
        {}, {"max_mean_word_length": 0}),
    "line_length": (PROSE, {"max_mean_line_length": 80}, {"max_mean_line_length": 0}),
    "language": (FRENCH, {"languages": "en"}, {"languages": ""}),
}


def test_reasons_are_exported_in_check_order():
  assert quality.REASONS == tuple(CASES)


def test_english_prose_passes_the_defaults():
  assert _reason(PROSE) is None
  assert _reason(PROSE, languages="en") is None


@pytest.mark.parametrize("reason", list(CASES))
def test_each_filter_rejects_its_document(reason):
  text, enable, _ = CASES[reason]
  assert _reason(text, **enable) == reason


@pytest.mark.parametrize("reason", list(CASES))
def test_zero_disables_each_filter(reason):
  text, enable, disable = CASES[reason]
  assert _reason(text, **{**enable, **disable}) is None


def test_documents_without_words_are_too_short():
  assert _reason("", min_chars=0) == "too_short"
  assert _reason(" \n\t " * 100, min_chars=0) == "too_short"


def test_lower_bounds_of_means():
  assert _reason(PROSE, min_mean_word_length=20) == "word_length"
  assert _reason(PROSE, min_mean_line_length=10_000) == "line_length"
  assert _reason(PROSE, min_mean_line_length=50, max_mean_line_length=10_000) is None


def test_ellipses_count_as_symbols():
  text = "Well... maybe… we will see... later… or not... who knows… really..."
  assert _reason(text) == "high_symbol"
  assert _reason(text, max_symbol_fraction=0) is None


def test_language_filter():
  assert _reason(FRENCH, languages="en") == "language"
  assert _reason(FRENCH, languages="en,fr") is None
  assert _reason(FRENCH, languages=" fr , en ") is None
  assert _reason(PROSE, languages="fr") == "language"
  with pytest.raises(UserError, match="xx"):
    _reason(PROSE, languages="en,xx")


def test_language_confidence_threshold():
  # py3langid's best guess is English, but only with probability ~0.33.
  text = "Setup and install notes"
  assert quality.identify_language(text)[0] == "en"
  assert _reason(text, min_chars=0, languages="en") == "language"
  assert _reason(text, min_chars=0, languages="en", min_language_confidence=0) is None


def test_large_document_is_checked_in_linear_time():
  # ~1 MB of distinct lines of random words: slow if any check were quadratic.
  import random
  rng = random.Random(0)
  vocab = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9)))
           for _ in range(5000)]
  text = "\n".join(" ".join(rng.choices(vocab, k=12)) + "." for _ in range(14_000))
  assert len(text) > 1_000_000
  assert _reason(text) == "too_long"
  assert _reason(text, max_chars=0) is None


def code_config():
  """Quality thresholds under which Python source passes.

  Relaxed from the natural-language defaults (the rest stay as they are):
    min_alpha_fraction 0.5 -> 0.4     operators, brackets and quotes are not letters
    max_symbol_fraction 0.1 -> 0.5    '#' starts every comment
    max_duplicate_line_fraction 0.3 -> 0.5, max_duplicate_line_char_fraction 0.2 -> 0.4
                                      "else:", "return None", "pass", "try:" recur
    max_top_ngram_char_fraction 0.2 -> 0.3, max_dup_ngram_char_fraction 0.15 -> 0.6
                                      code repeats its idioms ("self.x = x", call patterns)
    max_mean_word_length 10 -> 15     dotted names and calls without spaces form long "words"
  On CPython 3.11's standard library this keeps 722 of 734 modules; the rest are
  empty or near-empty __init__ files and a few tables of data.
  """
  cfg = quality.default_config()
  cfg.min_alpha_fraction = 0.4
  cfg.max_symbol_fraction = 0.5
  cfg.max_duplicate_line_fraction = 0.5
  cfg.max_duplicate_line_char_fraction = 0.4
  cfg.max_top_ngram_char_fraction = 0.3
  cfg.max_dup_ngram_char_fraction = 0.6
  cfg.max_mean_word_length = 15
  return cfg


def test_stdlib_source_passes_a_code_friendly_config():
  import inspect
  sources = [normalize.normalize(inspect.getsource(module), normalize.default_config())
             for module in (textwrap, json.decoder)]
  assert [quality.quality_reason(s, code_config()) for s in sources] == [None, None]
  # The natural-language defaults reject at least one of them: the knobs matter.
  assert any(_reason(s) is not None for s in sources)
  # Relaxing filters for code does not let prose-filter failures through wholesale.
  assert quality.quality_reason(CASES["high_digit"][0], code_config()) == "high_digit"
