"""A seeded synthetic 4-topic news dataset in the canonical AG News CSV layout.

Used by `make demo` and the tests (no hub here). Rows are `"class","title","description"`
with class 1-4 (World, Sports, Business, Sci/Tech), like the real train.csv/test.csv. Each
topic has its own vocabulary; a share of words comes from a shared pool and from other topics
so the task is learnable but not trivial.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

from ftk.fileio import atomic_open

TOPICS: dict[int, list[str]] = {
    1: "government minister election president parliament embassy troops ceasefire treaty refugees "
       "diplomat sanctions rebels capital protest united nations border prime vote coalition "
       "military peace talks foreign envoy crisis summit independence regime opposition".split(),
    2: "match season coach striker championship league tournament goal victory defeat team players "
       "stadium final olympic medal cup injury playoff quarterback pitcher inning racing title "
       "semifinal fans transfer captain referee".split(),
    3: "shares profit revenue quarter investors earnings market stocks merger acquisition bank "
       "economy inflation prices oil dollar retail sales company billion growth layoffs deal "
       "dividend bond analysts forecast exports tariffs".split(),
    4: "software internet computer researchers scientists space nasa chip processor wireless "
       "network online users browser microsoft google apple security virus launch satellite "
       "genome technology robot data phone mobile".split(),
}
SHARED = ("the a new on in after with for says over report to of as its at week year "
          "officials amid plan first two latest more").split()

TITLE_PATTERNS = [
    "{A} {B} after {C}", "{A} says {B} {C}", "New {A} {B} plan", "{A} {B} in {C} talks",
    "{A}: {B} and {C}", "{A} {B} as {C} {D}",
]


def _words(rng: random.Random, topic: int, n: int, noise: float) -> list[str]:
    out = []
    for _ in range(n):
        r = rng.random()
        if r < noise:
            other = rng.choice([t for t in TOPICS if t != topic])
            out.append(rng.choice(TOPICS[other]))
        elif r < noise + 0.35:
            out.append(rng.choice(SHARED))
        else:
            out.append(rng.choice(TOPICS[topic]))
    return out


def make_row(rng: random.Random, topic: int, noise: float) -> tuple[str, str, str]:
    a, b, c, d = _words(rng, topic, 4, noise / 2)
    title = rng.choice(TITLE_PATTERNS).format(A=a.capitalize(), B=b, C=c, D=d)
    desc = " ".join(_words(rng, topic, rng.randint(12, 24), noise)).capitalize() + "."
    return str(topic), title, desc


def generate(n: int, seed: int, noise: float = 0.15) -> list[tuple[str, str, str]]:
    """`n` rows, classes balanced and shuffled, fully determined by `seed`."""
    rng = random.Random(seed)
    topics = [1 + i % 4 for i in range(n)]
    rng.shuffle(topics)
    return [make_row(rng, t, noise) for t in topics]


def to_csv(rows: list[tuple[str, str, str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def write_dataset(out_dir: str | Path, n_train: int = 2000, n_test: int = 400, seed: int = 0,
                  noise: float = 0.15) -> dict[str, Path]:
    """Write train.csv and test.csv (disjoint seeds) and return their paths."""
    out_dir = Path(out_dir)
    paths = {}
    for split, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        path = out_dir / f"{split}.csv"
        with atomic_open(path) as fh:
            fh.write(to_csv(generate(n, s, noise)))
        paths[split] = path
    return paths
