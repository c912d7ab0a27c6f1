"""The per-record rules of `minimind data clean`: what a text is (its words, its language) and whether it is worth
training on. Each rule names itself; `quality_problem` returns the first one a text breaks.

    too_short / too_long   words (a CJK character counts as one) < min_words, characters > max_chars
    symbol_ratio           symbols (Unicode S*, and # * @ & % _ \\ | ~ ^) / characters  > max_symbol_ratio
    digit_ratio            digits / characters                                      > max_digit_ratio
    repeated_lines         characters in lines repeating an earlier line / characters > max_repeated_lines
    repeated_ngram         characters covered by the most frequent word 3-gram (CJK 6-gram) > max_ngram_share
    language               langid's likeliest language is not kept, and the kept ones' probability < min_language_score
                           (judged on the letters alone: digits and symbols say nothing of the language)
    stop_words             in a text of ≥ 50 words, stop words / words < min_stop_word_share (Gopher's presence rule
                           as a share, so that a long text cannot pass on two chance hits: "the", "and", … for
                           English; for Chinese the commonest function characters 的 了 是 之 而 …, classical ones
                           included)

PII scrubbing (`scrub`) is not a rule: it rewrites e-mail addresses, phone numbers, PRC ID and card numbers in
what is kept into placeholders.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from minimind.data.clean import CleanConfig

PII = [("email", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
       ("id_number", re.compile(r"(?<!\d)\d{17}[\dXx](?!\d)"), "<id>"),                  # PRC resident ID
       ("card_number", re.compile(r"(?<!\d)(?:\d[ -]?){15,18}\d(?!\d)"), "<card>"),
       ("phone", re.compile(r"(?<![\d+])(?:\+?\d{1,3}[ -]?)?(?:1[3-9]\d{9}|\(?\d{3}\)?[ -]?\d{3}[ -]?\d{4})(?!\d)"),
        "<phone>")]

CJK = "\u3400-\u4dbf\u4e00-\u9fff"
WORD = re.compile(rf"[{CJK}]|[^\W\d_{CJK}]+")            # a CJK character, or a run of other letters
DIGIT = re.compile(r"\d")
NOT_LETTERS = re.compile(r"[\W\d_]+")
THREE_DIGITS = re.compile(r"\d{3}")          # every phone, ID and card number pattern has a run of three
LANGUAGE_SAMPLE = 1000                      # characters langid reads: its accuracy has saturated long before
# Gopher's eight English stop words; for Chinese 70 of the commonest characters: modern function words, classical
# particles (兮 矣 焉 哉 …) and the commonest of poetry (一 人 中 时 如 相), so that prose and 0.7% of the default
# corpus's poems with 50+ characters fall short of 2%, while random characters (0.3% expected) do.
STOP_WORDS = {"en": frozenset("the be to of and that have with".split()),
              "zh": frozenset("的了是在不和有我这也你他她就都个们上下来到说要会着对能地得与把被从给还又很里"
                              "之而其以为于者乎所兮矣焉哉亦乃则且若此彼无莫未何自已一人中时如相")}
STOP_WORD_MIN_WORDS = 50            # Gopher's minimum: a shorter text (a chat turn) has too few words to judge
# langid's labels that count as each kept language: Wu and Cantonese are Chinese written in the same script.
LANGUAGE_LABELS = {"zh": ("zh", "wuu", "yue")}


@functools.cache
def _symbol_table() -> dict[int, None]:
    """A str.translate table deleting every code point of Unicode category S* (Sm, Sc, Sk, So) and # * @ & % _ \\
    | ~ ^ (a table lookup per character: a regex class of these 7,000 code points is 30× slower)."""
    symbols = [c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)).startswith("S")]
    return dict.fromkeys(symbols + [ord(c) for c in "#*@&%_\\|~^"])


@functools.cache
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def known_languages() -> set[str]:
    """The language codes langid tells apart."""
    return set(_identifier().nb_classes)


def load_tables(languages: list[str]) -> None:
    """Build the symbol table and (with `languages`) load langid's model now: before worker processes fork, so
    they share them instead of each building its own."""
    _symbol_table()
    if languages:
        _identifier()


def _labels(language: str) -> tuple[str, ...]:
    return LANGUAGE_LABELS.get(language, (language,))


def language_scores(text: str, languages: list[str]) -> tuple[str, dict[str, float]]:
    """(langid's likeliest label for the letters of `text`, the probability of each of `languages`, its labels
    summed)."""
    ranked = dict(_identifier().rank(NOT_LETTERS.sub(" ", text[:2 * LANGUAGE_SAMPLE])[:LANGUAGE_SAMPLE]))
    return max(ranked, key=ranked.get), {language: sum(ranked.get(label, 0.0) for label in _labels(language))
                                         for language in languages}


def quality_problem(text: str, config: CleanConfig) -> tuple[str | None, str | None]:
    """(the first rule `text` breaks or None, its language: one of config.languages, else langid's label)."""
    n = len(text)
    words = WORD.findall(text)
    if len(words) < config.min_words:
        return "too_short", None
    if n > config.max_chars:
        return "too_long", None
    if (n - len(text.translate(_symbol_table()))) / n > config.max_symbol_ratio:
        return "symbol_ratio", None
    if len(DIGIT.findall(text)) / n > config.max_digit_ratio:
        return "digit_ratio", None
    seen, repeated = set(), 0
    for line in (line.strip() for line in text.splitlines()):
        if line in seen:
            repeated += len(line)               # by characters: a play's repeated speaker names weigh little
        seen.add(line)
    if repeated / n > config.max_repeated_lines:
        return "repeated_lines", None
    grams = _ngrams(text)
    if grams:
        gram, count = Counter(grams).most_common(1)[0]
        if count > 2 and count * len(gram) / n > config.max_ngram_share:
            return "repeated_ngram", None
    language = None
    if config.languages:
        label, scores = language_scores(text, config.languages)
        language = max(scores, key=scores.get)
        if not any(label in _labels(code) for code in config.languages) \
                and sum(scores.values()) < config.min_language_score:
            return "language", label
    if language in STOP_WORDS and len(words) >= STOP_WORD_MIN_WORDS:
        stop = STOP_WORDS[language]
        if sum(word.lower() in stop for word in words) < config.min_stop_word_share * len(words):
            return "stop_words", language
    return None, language


def _ngrams(text: str) -> list[str]:
    """Word 3-grams of the text's words, and CJK 6-grams of its CJK runs (Chinese has no spaces)."""
    words = re.findall(r"[^\W\d_]+", text.lower())
    grams = [" ".join(words[i:i + 3]) for i in range(len(words) - 2)] if len(words) >= 3 else []
    for run in re.findall(r"[\u4e00-\u9fff]{6,}", text):
        grams += [run[i:i + 6] for i in range(len(run) - 5)]
    return grams


def scrub(text: str) -> tuple[str, Counter]:
    """PII replaced by placeholders, and how many of each kind."""
    found = Counter()
    has_email, has_number = "@" in text, THREE_DIGITS.search(text) is not None     # most texts skip the patterns
    for kind, pattern, placeholder in PII:
        if has_email if kind == "email" else has_number:
            text, n = pattern.subn(placeholder, text)
            found[kind] += n
    return text, found
