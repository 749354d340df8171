"""BERT WordPiece tokenizer: basic tokenizer (clean, CJK split, lower case, accent strip,
punctuation split) then greedy longest-match-first WordPiece. Equal to transformers'
BertTokenizer (do_lower_case=True) on plain text; special tokens are not parsed from text.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path


def _is_whitespace(ch: str) -> bool:
    if ch in (" ", "\t", "\n", "\r"):
        return True
    return unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    if ch in ("\t", "\n", "\r"):
        return False
    return unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # Every non-letter/number ASCII character counts as punctuation (like BERT's "$", "^", "`").
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F
    )


def basic_tokenize(text: str, do_lower_case: bool = True) -> list[str]:
    """BERT's BasicTokenizer: returns whitespace/punctuation-separated words."""
    cleaned = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_whitespace(ch):
            cleaned.append(" ")
        elif _is_cjk(cp):
            cleaned.append(f" {ch} ")
        else:
            cleaned.append(ch)
    words = []
    for token in "".join(cleaned).split():
        if do_lower_case:
            token = token.lower()
            token = "".join(c for c in unicodedata.normalize("NFD", token) if unicodedata.category(c) != "Mn")
        current = ""
        for ch in token:
            if _is_punctuation(ch):
                if current:
                    words.append(current)
                    current = ""
                words.append(ch)
            else:
                current += ch
        if current:
            words.append(current)
    return words


#: transformers' `clean_up_tokenization` (PreTrainedTokenizerBase), applied in this order.
CLEAN_UP_RULES = [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                  (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

#: Punctuation a caption writes against the word before it ("three shapes: a ..."), and brackets
#: written against the word after: what decode's cleanup (transformers') leaves spaced apart.
CAPTION_CLOSING = frozenset(":;)]}%")
CAPTION_OPENING = frozenset("([{")


def caption_text(text: str) -> str:
    """A decoded caption as people write it: no space before ':', ';', a closing bracket or
    '%', none after an opening bracket (decode's cleanup already joins '.', ',', '?', '!').
    WordPiece.decode stays equal to transformers'; captions go through this too. The Swift
    engine's WordPiece.captionText does the same."""
    out: list[str] = []
    for i, ch in enumerate(text):
        if ch == " " and ((i + 1 < len(text) and text[i + 1] in CAPTION_CLOSING) or (out and out[-1] in CAPTION_OPENING)):
            continue
        out.append(ch)
    return "".join(out)


class WordPiece:
    """WordPiece tokenizer over a vocabulary (id = position in the list)."""

    def __init__(self, vocab: list[str], do_lower_case: bool = True, unk_token: str = "[UNK]",
                 max_input_chars_per_word: int = 100):
        self.vocab = list(vocab)
        self.ids = {tok: i for i, tok in enumerate(self.vocab)}
        if len(self.ids) != len(self.vocab):
            raise ValueError("vocabulary has duplicate tokens")
        if unk_token not in self.ids:
            raise ValueError(f"vocabulary lacks the unknown token {unk_token!r}")
        self.do_lower_case = do_lower_case
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> "WordPiece":
        lines = Path(path).read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return cls([line.rstrip("\r") for line in lines], **kwargs)

    def save(self, path: str | Path) -> None:
        Path(path).write_text("".join(tok + "\n" for tok in self.vocab), encoding="utf-8")

    def __len__(self) -> int:
        return len(self.vocab)

    def token_id(self, token: str) -> int:
        if token not in self.ids:
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return self.ids[token]

    def _wordpiece(self, word: str) -> list[str]:
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_token]
        pieces, start = [], 0
        while start < len(word):
            end, found = len(word), None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.ids:
                    found = piece
                    break
                end -= 1
            if found is None:
                return [self.unk_token]
            pieces.append(found)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        return [p for w in basic_tokenize(text, self.do_lower_case) for p in self._wordpiece(w)]

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without [CLS]/[SEP]."""
        return [self.ids[p] for p in self.tokenize(text)]

    def decode(self, ids, skip_special_tokens: bool = True, clean_up_tokenization_spaces: bool = True) -> str:
        """Joins pieces as transformers' BertTokenizer.decode does: "##" pieces glue to the previous
        one, others are space-separated, then (clean_up_tokenization_spaces) the space before
        ".", "?", "!", "," and English clitics is dropped ("hexagon , a" -> "hexagon, a"). The
        Swift engine's WordPiece.decode gives the same text."""
        tokens = [self.vocab[int(i)] for i in ids]
        if skip_special_tokens:
            tokens = [t for t in tokens if t not in SPECIAL_TOKENS]
        text = " ".join(tokens).replace(" ##", "").strip()
        if clean_up_tokenization_spaces:
            for old, new in CLEAN_UP_RULES:
                text = text.replace(old, new)
        return text

    def decode_caption(self, ids) -> str:
        """The caption of token ids (special tokens skipped), as people write it (caption_text)."""
        return caption_text(self.decode(ids))
