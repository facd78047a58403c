import pytest

from ftk.data.task import builtin_tasks, load_task
from ftk.errors import FtkError


@pytest.mark.parametrize("name", sorted(builtin_tasks()))
def test_every_builtin_task_validates(name):
    task = load_task(name)
    for version in task.prompts.versions:
        prompt = task.prompt(version)
        assert isinstance(prompt, str)
        if task.kind in ("classification", "pair_classification", "ner"):
            assert prompt.strip()
    if task.is_classification:
        for lab in task.labels:
            assert task.target_for(lab)


def test_agnews_task():
    t = load_task("agnews")
    assert t.labels == ["World", "Sports", "Business", "Sci/Tech"]
    assert t.prompts.default == "v2"
    assert t.target_for("Business") == "3: Business"


def test_unknown_task_suggests_close_name():
    with pytest.raises(FtkError, match="did you mean 'agnews'"):
        load_task("agnew")


def test_task_yaml_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("name: x\nkind: classification\nlabels: [a, b]\nsources: {}\n"
                   "prompts: {default: v1, versions: {v1: hi}}\nlabelz: [c]\n")
    with pytest.raises(FtkError) as exc:
        load_task(bad)
    assert str(bad) in str(exc.value) and "`labelz`: unknown key" in str(exc.value)


@pytest.mark.parametrize("labels, expected", [
    ("['[invalid]', b]", "is the name ftk gives an unparseable answer"),
    ("[' [INVALID] ', b]", "is the name ftk gives an unparseable answer"),
    ("['', b]", "is empty"),
    ("['  ', b]", "is empty"),
    ("[World, world, Sports]", "'World' and 'world' differ only by case"),
    # issue 32: labels an exact answer could never match, or that would break a prompt or a report line
    ("[World, 'World ', Sports]", "'World ' has surrounding whitespace"),
    ("['World Cup', 'world  cup']", "differ only by case or spacing"),
    ("[\"a\\nb\", c]", "holds the control or format character '\\n'"),
    ("[\"a\\tb\", c]", "holds the control or format character '\\t'"),
    ("[\"a\\u200bb\", c]", "control or format character"),
    (f"[{'x' * 100_000}, b]", "has 100,000 characters (at most 200"),
    ("[" + ", ".join(f"l{i}" for i in range(10_001)) + "]", "at most 10000 items"),
    ("[a, b, a]", "must be unique ('a' appears twice)"),
])
def test_labels_that_would_corrupt_the_metrics_are_refused(tmp_path, labels, expected):
    """A label named like the invalid marker turned garbage into correct answers; an empty label or two
    labels that differ only by case were misscored. Refused when the task is read: file and key named."""
    bad = tmp_path / "t.yaml"
    bad.write_text(f"name: x\nkind: classification\nlabels: {labels}\n"
                   "sources: {csv: {reader: csv, label_column: y, input: '{x}'}}\n"
                   "prompts: {default: v1, versions: {v1: hi}}\n")
    with pytest.raises(FtkError) as exc:
        load_task(bad)
    assert str(bad) in str(exc.value) and "labels" in str(exc.value) and expected in str(exc.value)
