"""CIDEr-D with document frequencies from a fixed reference corpus (the SCST reward).

pycocoevalcap's Cider computes document frequencies from the references of each call; a
training reward needs them fixed (from the whole training corpus), so this small scorer keeps
them. Same definition: n = 1..4, TF-IDF vectors, Gaussian length penalty (sigma 6), clipped
candidate counts, mean over references, x10. Words are lowercased and split on spaces after
separating ',' and ':' and dropping '.', '!', '?' and quotes (the scenes captions need no more;
other captions get close to the PTB tokenizer's words).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


_DROPPED = str.maketrans({c: " " for c in '.!?"'})


def _words(text: str) -> list[str]:
    return text.lower().translate(_DROPPED).replace(",", " , ").replace(":", " : ").split()


class CiderD:
    def __init__(self, references: list[list[str]], sigma: float = 6.0):
        """`references`: every image's reference captions (any number each), the documents
        whose n-gram frequencies weigh the scores."""
        self.sigma = sigma
        self.df: Counter = Counter()
        for refs in references:
            seen = set()
            for r in refs:
                w = _words(r)
                for n in range(1, 5):
                    seen.update(_ngrams(w, n))
            self.df.update(seen)
        self.log_docs = math.log(float(len(references)))

    def _vector(self, words):
        vec = []
        for n in range(1, 5):
            counts = _ngrams(words, n)
            vec.append({g: c * (self.log_docs - math.log(max(1.0, self.df[g]))) for g, c in counts.items()})
        return vec

    def _sim(self, cand, ref, len_c, len_r):
        delta = len_c - len_r
        out = np.zeros(4)
        for n in range(4):
            norm_c = math.sqrt(sum(v * v for v in cand[n].values()))
            norm_r = math.sqrt(sum(v * v for v in ref[n].values()))
            dot = sum(min(v, ref[n][g]) * ref[n][g] for g, v in cand[n].items() if g in ref[n])
            if norm_c and norm_r:
                out[n] = dot / (norm_c * norm_r)
            out[n] *= math.exp(-(delta ** 2) / (2 * self.sigma ** 2))
        return out

    def score(self, candidate: str, references: list[str]) -> float:
        cw = _words(candidate)
        cv = self._vector(cw)
        total = np.zeros(4)
        for r in references:
            rw = _words(r)
            total += self._sim(cv, self._vector(rw), len(cw), len(rw))
        return float(total.mean() / len(references) * 10.0)

    def scores(self, candidates: list[str], references: list[list[str]]) -> np.ndarray:
        return np.array([self.score(c, r) for c, r in zip(candidates, references)])
