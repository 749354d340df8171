"""WordPiece equals transformers' BertTokenizer (bert-base-uncased vocab)."""

import pytest
import transformers

from lightcap_train.reference.wordpiece import WordPiece, basic_tokenize

SAMPLE = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs playing in the snow, one brown & one white!",
    "Café naïve résumé Ångström façade Øresund",
    "ÀÉÎÕÜ ñ ç ß",
    "There are 12,345 apples and 3.14 pies in 2024",
    "Hello?!...  (weird)   spacing\tand\nnewlines",
    "東京タワーと富士山 の 写真",
    "中文字符测试，还有标点。",
    "emoji 🐶🐱 and ❤️ hearts 👍🏽",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x" * 120,
    "",
    "   ",
    "don't won't it's ol' rock'n'roll",
    "e-mail @user #hashtag $100 50% a+b=c ~tilde `backtick` ^caret |pipe",
    "\u00a0non-breaking\u2003em space\u200bzero width",
    "control\u0007char\u0000null\ufffdreplacement",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "Привет мир, Ελληνικά, עברית, العربية",
    "naïvely re-tokenised pre-trained O'Neill's",
]


@pytest.fixture(scope="module")
def tokenizers(minilm_dir):
    """Ours, transformers' BertTokenizer (Rust backend) and BertTokenizerLegacy (pure Python)."""
    ours = WordPiece.from_file(minilm_dir / "vocab.txt")
    peer = transformers.BertTokenizer.from_pretrained(str(minilm_dir))
    legacy = transformers.BertTokenizerLegacy(vocab_file=str(minilm_dir / "vocab.txt"), do_lower_case=True)
    return ours, peer, legacy


@pytest.mark.parametrize("text", SAMPLE)
def test_tokens_match_bert_tokenizer(tokenizers, text):
    ours, peer, legacy = tokenizers
    assert ours.tokenize(text) == peer.tokenize(text)
    assert ours.tokenize(text) == legacy.tokenize(text)
    assert ours.encode(text) == peer.encode(text, add_special_tokens=False)


def test_decode_joins_pieces(tokenizers):
    ours, _, legacy = tokenizers
    for text in SAMPLE[:6]:
        ids = ours.encode(text)
        assert ours.decode(ids, clean_up_tokenization_spaces=False) == \
            legacy.convert_tokens_to_string(legacy.convert_ids_to_tokens(ids))
    for text in SAMPLE + ["three shapes: a small cyan hexagon, a large red ring and one more",
                          "it's there , isn't it ? yes ! they 're here . i 'm sure , we 've seen"]:
        ids = ours.encode(text)
        assert ours.decode(ids) == legacy.decode(ids, skip_special_tokens=True)
    cls, sep = ours.token_id("[CLS]"), ours.token_id("[SEP]")
    assert ours.decode([cls] + ours.encode("sunsets") + [sep]) == "sunsets"


def test_unknown_and_errors():
    tok = WordPiece(["[PAD]", "[UNK]", "dog", "##s"])
    assert tok.tokenize("dogs cat") == ["dog", "##s", "[UNK]"]
    assert basic_tokenize("Hi, there") == ["hi", ",", "there"]
    with pytest.raises(ValueError, match="unknown token"):
        WordPiece(["a", "b"])
    with pytest.raises(ValueError, match="duplicate"):
        WordPiece(["[UNK]", "a", "a"])
    with pytest.raises(KeyError, match="not in the vocabulary"):
        tok.token_id("[CLS]")


def test_caption_text_writes_punctuation_against_its_word():
    from lightcap_train.reference.wordpiece import caption_text
    assert caption_text("three shapes : a small cyan cross, a large star") == "three shapes: a small cyan cross, a large star"
    assert caption_text("a dog ( brown ) ; 50 %") == "a dog (brown); 50%"
    assert caption_text("a cat : ") == "a cat: "  # a space before a non-punctuation character stays
    assert caption_text("") == "" and caption_text(" : ") == ": "
    tok = WordPiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "three", "shapes", ":", "a", "ring"])
    assert tok.decode([5, 6, 7, 8, 9]) == "three shapes : a ring"  # decode stays transformers'
    assert tok.decode_caption([2, 5, 6, 7, 8, 9, 3]) == "three shapes: a ring"
