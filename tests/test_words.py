from hypothesis import given
from hypothesis import strategies as st

from model.words import _TOKEN_RE, split_with_offsets, split_words


def test_scripts_are_split_into_words_and_punctuation():
    assert split_words("Héllo, WORLD! 42") == ["héllo", ",", "world", "!", "42"]
    assert split_words("Привет, мир") == ["привет", ",", "мир"]
    assert split_words("Γειά σου Κόσμε") == ["γειά", "σου", "κόσμε"]
    assert split_words("안녕하세요 세계!") == ["안녕하세요", "세계", "!"]
    assert split_words("我爱北京") == ["我", "爱", "北", "京"]  # no spaces in CJK: one per char
    assert split_words("カタカナ") == ["カ", "タ", "カ", "ナ"]


def test_nfkc_and_lowercase_option():
    assert split_words("ｆｕｌｌ　ｗｉｄｔｈ ﬁne") == ["full", "width", "fine"]
    assert split_words("e\u0301te\u0301") == ["été"]  # combining accents compose
    assert split_words("Paris LONDON", lowercase=False) == ["Paris", "LONDON"]


@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_the_ascii_fast_path_splits_as_the_unicode_pattern(text):
    assert split_words(text, lowercase=False) == _TOKEN_RE.findall(text)
    assert split_words(text) == [w.lower() for w in _TOKEN_RE.findall(text)]
    assert [w for w, _, _ in split_with_offsets(text)] == split_words(text)


def test_the_ascii_fast_path_on_punctuation_underscores_and_control_spaces():
    text = "snake_case, e-mail!! x\x1cy\x1fz\t42nd_"
    assert split_words(text) == ["snake_case", ",", "e", "-", "mail", "!", "!", "x", "y", "z",
                                 "42nd_"]


def test_offsets_point_into_the_original_text():
    text = "ｆｕｌｌ Héllo, e\u0301te\u0301 세계"
    spans = split_with_offsets(text)
    assert [w for w, _, _ in spans] == split_words(text)
    assert [text[a:b] for _, a, b in spans] == ["ｆｕｌｌ", "Héllo", ",", "e\u0301te\u0301", "세계"]
