"""A concept vocabulary for any captioned data: the content words its captions use most.

The concept extractor predicts, for each image, which of K concept words its captions name.
On scenes the 25 concepts are the words of the renderer; on other data they are mined from
the training references:

    concepts = mine_concepts(split.references, n=1000, min_images=5)
    labels = image_labels(split.references, concepts, min_refs=2)  # float32 [images, K]

Words are lowercase runs of letters a-z with English plurals folded ("dogs" -> "dog",
"people" -> "person"); mining also drops stop words (function words, number words and
caption filler such as "picture"). The word lists are written out here: no nltk.
"""

from __future__ import annotations

import re

import numpy as np

#: Function words, number words and generic caption filler: never mined as concepts.
STOP_WORDS = frozenset("""
    a an the this that these those such

    i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his
    himself she her hers herself it its itself they them their theirs themselves one ones
    someone something somebody anyone anything anybody everyone everything everybody nobody
    nothing none who whom whose which what whatever whoever where when why how

    about above across after against along alongside amid among amongst around as at atop
    before behind below beneath beside besides between beyond by down during except for from
    in inside into near nearby next of off on onto opposite out outside over past per round
    since than through throughout till to toward towards under underneath unlike until up upon
    via with within without front top

    am is are was were be been being do does did doing done have has had having will would
    shall should can could may might must ought let get gets got getting

    and or but nor so yet if then else because while whereas though although either neither
    both whether also too very just only even still again ever not no yes

    all any each every few many more most much other another others own same some several
    various different lot lots bunch couple pair group kind sort type

    zero two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
    sixteen seventeen eighteen nineteen twenty thirty forty fifty hundred thousand dozen
    first second third fourth fifth half single double

    image picture photo photograph pic snapshot view shot scene closeup close shown showing
    there here now way thing things
""".split())

#: Plurals that no suffix rule folds, and plural-looking words that the rules must leave alone.
IRREGULAR = {
    "people": "person", "persons": "person", "men": "man", "women": "woman", "children": "child",
    "mice": "mouse", "teeth": "tooth", "feet": "foot", "geese": "goose", "sheep": "sheep",
    "oxen": "ox", "lice": "louse", "dice": "die", "buses": "bus", "gases": "gas",
    "lenses": "lens", "skis": "ski", "taxis": "taxi", "kiwis": "kiwi", "menus": "menu",
    "tomatoes": "tomato", "potatoes": "potato", "heroes": "hero", "mangoes": "mango",
    "movies": "movie", "cookies": "cookie", "brownies": "brownie", "zombies": "zombie",
    "hoodies": "hoodie", "selfies": "selfie", "smoothies": "smoothie", "goalies": "goalie",
    "leaves": "leaf", "knives": "knife", "wives": "wife", "lives": "life", "wolves": "wolf",
    "halves": "half", "shelves": "shelf", "calves": "calf", "loaves": "loaf",
    "scarves": "scarf", "thieves": "thief", "elves": "elf", "selves": "self", "hooves": "hoof",
}
#: Words ending in "s" that are not plurals (or have no singular): kept as they are.
NOT_PLURAL = frozenset("""
    news series species means pants jeans shorts trousers scissors clothes sunglasses goggles
    binoculars pajamas overalls always perhaps sometimes afterwards upwards downwards whereas
    christmas canvas atlas bias gas lens has was its yes
""".split())

_WORD = re.compile(r"[a-z]+")


def fold_plural(word: str) -> str:
    """The singular of a lowercase English plural by simple rules ("boxes" -> "box", "ponies"
    -> "pony"), irregular plurals from a table; words ending in "ss", "us" or "is" ("glass",
    "bus", "tennis") and words of three letters or fewer are left alone."""
    if word in IRREGULAR:
        return IRREGULAR[word]
    if len(word) <= 3 or not word.endswith("s") or word in NOT_PLURAL:
        return word
    if word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y" if len(word) > 4 else word[:-1]  # ponies -> pony, ties -> tie
    if word.endswith(("sses", "xes", "zzes", "ches", "shes")):
        return word[:-2]  # glasses, boxes, buzzes, benches, dishes
    return word[:-1]  # dogs, horses, gloves, shoes


def words(caption: str) -> list[str]:
    """Lowercase runs of letters a-z of at least two letters, plurals folded (stop words kept)."""
    return [fold_plural(w) for w in _WORD.findall(caption.lower()) if len(w) >= 2]


def concept_words(caption: str) -> list[str]:
    """The content words of a caption: `words` less the stop words (as written or folded), in
    order, duplicates kept."""
    out = []
    for raw in _WORD.findall(caption.lower()):
        if len(raw) < 2 or raw in STOP_WORDS:
            continue
        word = fold_plural(raw)
        if len(word) >= 2 and word not in STOP_WORDS:
            out.append(word)
    return out


def mine_concepts(references: list[list[str]], n: int, min_images: int = 1) -> list[str]:
    """The `n` concept words named by the most images (any reference of the image naming the
    word counts once), each named by at least `min_images` images; ties alphabetical."""
    if n < 1:
        raise ValueError(f"the number of concepts must be positive, got {n}")
    counts: dict[str, int] = {}
    for refs in references:
        for word in {w for r in refs for w in concept_words(r)}:
            counts[word] = counts.get(word, 0) + 1
    kept = [w for w, c in counts.items() if c >= min_images]
    ranked = sorted(kept, key=lambda w: (-counts[w], w))
    return ranked[:n]


def image_labels(references: list[list[str]], concepts: list[str], min_refs: int = 1) -> np.ndarray:
    """Multi-hot float32 [images, K]: 1 where at least `min_refs` of the image's references
    name the concept (all of them when it has fewer).

    Matching uses `words` (plurals folded, stop words kept, so that a concept such as "above"
    can be labelled). A concept goes through the same folding, so "dogs" in a concept list
    matches "dog" and "dogs" in a caption, and a concept of several words ("fire hydrant") is
    named by a reference holding those words in a row.
    """
    if min_refs < 1:
        raise ValueError(f"min_refs must be at least 1, got {min_refs}")
    column: dict[tuple[str, ...], int] = {}
    for k, concept in enumerate(concepts):
        key = tuple(words(concept))
        if not key:
            raise ValueError(f"concept {concept!r} has no word of two or more letters a-z")
        if key in column:
            raise ValueError(f"concepts {concepts[column[key]]!r} and {concept!r} are the same "
                             "words once plurals are folded")
        column[key] = k
    lengths = sorted({len(key) for key in column})
    labels = np.zeros((len(references), len(concepts)), dtype=np.float32)
    for i, refs in enumerate(references):
        if not refs:
            continue
        need = min(min_refs, len(refs))
        named = np.zeros(len(concepts), dtype=np.int32)
        for r in refs:
            ws = words(r)
            grams = {tuple(ws[j:j + n]) for n in lengths for j in range(len(ws) - n + 1)}
            for key in grams:
                if key in column:
                    named[column[key]] += 1
        labels[i] = named >= need
    return labels


def read_concepts(path: str) -> list[str]:
    """A concept list: one concept a line, surrounding blanks stripped, blank lines skipped.
    A repeated concept or a file without any is a ValueError naming the file."""
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    concepts, seen = [], {}
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        if line in seen:
            raise ValueError(f"{path}: line {number}: concept {line!r} repeats line {seen[line]}")
        seen[line] = number
        concepts.append(line)
    if not concepts:
        raise ValueError(f"{path}: no concepts (the file is empty)")
    return concepts
