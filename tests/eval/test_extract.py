import pytest

from ftk.eval.extract import INVALID, make_extractor

AG = ["World", "Sports", "Business", "Sci/Tech"]


@pytest.mark.parametrize("text, expected", [
    ("3", "Business"),
    ("3: Business", "Business"),
    ("business", "Business"),
    (" Business.", "Business"),
    ("4: Sci/Tech", "Sci/Tech"),
    ("sci/tech", "Sci/Tech"),
    ("The topic is Sports", "Sports"),
    ("2)", "Sports"),
    ("1: Business", INVALID),      # number and name disagree
    ("5", INVALID),                # no such label number
    ("", INVALID),
    ("   \n", INVALID),
    ("no idea", INVALID),
    ("Worldwide", INVALID),        # a label inside another word is not a match
    ("Wörld ünïcode", INVALID),
])
def test_agnews_extraction(text, expected):
    assert make_extractor(AG)(text) == expected


def test_synonyms_map_to_labels():
    ex = make_extractor(["negative", "neutral", "positive"], synonyms={"bearish": "negative"})
    assert ex("Bearish.") == "negative"
    assert ex("2") == "neutral"


def test_unknown_step_is_an_error():
    with pytest.raises(ValueError, match="unknown extraction step"):
        make_extractor(AG, ["strip", "nope"])


def test_regex_step_with_group():
    ex = make_extractor(AG, ["regex:2:(topic|label)\\s*[:=]\\s*(\\w+)", "label"])
    assert ex("The label = sports, I think") == "Sports"
    assert ex("Sports") == INVALID  # the regex must match first


def test_digit_labels_use_names_not_positions():
    ex = make_extractor(["0", "1", "2", "3", "4"], ["strip", "label", "take_first"])
    assert ex("1") == "1" and ex("Output: 3") == "3" and ex("5") == INVALID


@pytest.mark.parametrize("text, expected", [
    ("B", "Sports"), ("(c)", "Business"), ("d. Sci/Tech", "Sci/Tech"), ("Answer: A", "World"),
    ("E", INVALID), ("Banana", INVALID), ("", INVALID),
])
def test_option_letters(text, expected):
    assert make_extractor(AG, ["strip", "option_letter", "take_first"])(text) == expected


def test_step_registry_matches_the_task_schema():
    from ftk.data.task import EXTRACTION_STEPS
    from ftk.eval.extract import STEPS

    assert set(STEPS) == set(EXTRACTION_STEPS)


def test_after_key_step_reads_the_label_after_its_key():
    ex = make_extractor(["negative", "neutral", "positive"], ["after:Label", "strip", "label", "take_first"])
    assert ex("The sentence is about profits. Label : positive") == "positive"
    assert ex("label= Neutral.") == "neutral"
    assert ex("positive") == INVALID  # no Label key: invalid, never guessed
