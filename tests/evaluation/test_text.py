"""Cleaning and tokenisation shared by all lexical metrics."""

from brainllm.evaluation.text import clean, detokenize, tokenization_name, tokenize


def test_clean_strips_pad_and_eos_strings_and_whitespace():
    assert clean("  Hello world<|im_end|><|im_end|>\n") == "Hello world"
    assert clean("<s> a </s><pad><pad>") == "a"
    assert clean("one<|endoftext|>two<eos>") == "one two"
    assert clean("x <|eot_id|> y [PAD] ⁇") == "x y"
    assert clean(None) == "" and clean("   \t\n ") == ""


def test_tokenize_words_and_punctuation_lowercased():
    assert tokenize("Don't stop—now!") == ["don't", "stop", "—", "now", "!"]
    assert tokenize("The Cat, the cat.") == ["the", "cat", ",", "the", "cat", "."]
    assert tokenize("The Cat.", lowercase=False) == ["The", "Cat", "."]
    assert tokenize("The cat.", keep_punct=False) == ["the", "cat"]


def test_tokenize_unicode_and_edge_cases():
    assert tokenize("Café ﬁne ＡＢＣ") == ["café", "fine", "abc"]  # NFKC folds the ligature and full-width letters
    assert tokenize("...!?") == [".", ".", ".", "!", "?"]
    assert tokenize("...!?", keep_punct=False) == []
    assert tokenize("") == [] and tokenize("<|im_end|>") == []
    assert tokenize("日本語 テキスト") == ["日本語", "テキスト"]


def test_detokenize_round_trips_and_names():
    tokens = tokenize("Well, it's 3.5 o'clock!")
    assert tokenize(detokenize(tokens)) == tokens
    assert tokenization_name() == "nfkc-lower-words+punct"
    assert tokenization_name(lowercase=False, keep_punct=False) == "nfkc-cased-words"
