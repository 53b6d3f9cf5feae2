"""Whisper's decoding loops, found in a transcript's text and cut off. Pure functions, no models.

A loop is whisper repeating what it has already written until it runs out of tokens, e.g. "I will
miss you so much. I will miss you so much. I will". It shows as a transcript that *ends* in
copies of one phrase of two or more words, the last copy possibly cut short. A phrase repeated
inside a sentence ("I know, I know, but ...") or a single repeated word ("no, no") is not a loop.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[\w']+")
_THREE_TIMES = re.compile(r"\b(\w.{2,40}?)\W+\1\W+\1\b")  # one phrase three times in a row, anywhere
MAX_WORDS = 200  # a transcript longer than this is not searched for a trailing loop (bounded cost)


def looping(text: str) -> bool:
    """Whether a transcript shows a decoding loop: a trailing repetition, or a phrase three times."""
    return trailing_repeat(text) is not None or bool(_THREE_TIMES.search(text.lower()))


def trailing_repeat(text: str) -> int | None:
    """Where the loop starts: the character offset just past the first copy of the repeated phrase.

    The transcript's words after the first copy of a phrase of n >= 2 words must all be further
    copies of it (the last one may stop early), and there must be at least max(2, 0.6 n) of them
    ("Come here, I said come here" is not a loop).
    None when the transcript does not end in a loop.
    """
    matches = list(_WORD.finditer(text))[:MAX_WORDS + 1]
    if len(matches) > MAX_WORDS:
        return None
    words = [m.group().lower() for m in matches]
    n_words = len(words)
    for start in range(n_words):
        for n in range(2, n_words - start - 1):
            tail = words[start + n:]
            if len(tail) >= max(2.0, 0.6 * n) and all(w == words[start + k % n] for k, w in enumerate(tail)):
                return matches[start + n - 1].end()
    return None


def collapse_repeats(text: str) -> str:
    """The transcript with a trailing loop cut back to the phrase's first copy (and the punctuation
    right after it); unchanged when there is no trailing loop."""
    cut = trailing_repeat(text)
    if cut is None:
        return text
    rest = text[cut:]
    punct = re.match(r"[^\w\s']*", rest)
    return (text[:cut] + (punct.group() if punct else "")).strip()
