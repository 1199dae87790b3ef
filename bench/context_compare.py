"""Compare our compiled ConText rules with medspacy on accuracy and ms/report.

Run by hand; prints figures. Reads the corpus at run time (never copied):

    .venv/bin/python bench/context_compare.py                  # ours only
    /tmp/medspacy-venv/bin/python bench/context_compare.py      # ours + medspacy

(the medspacy venv: ``python3.11 -m venv /tmp/medspacy-venv &&
/tmp/medspacy-venv/bin/pip install medspacy 'spacy<3.8' pyyaml``; it is kept
out of the project venv on purpose.)

Accuracy reference: the Indiana chest X-ray gold standard
(negbio/openi_gld_std14.csv, 0/1 per label per report) against the findings
and impression text of indiana-openi/indiana_reports.csv, and the four
chexpert-labeler examples (1 / 0 / -1 = positive / negative / uncertain).
Both approaches use the same concept regexes (policies/terms), so the
comparison is between the ConText engines and their trigger lists. A label is
positive when a mention of one of its concepts is affirmed: neither negated,
nor hedged, nor hypothetical, nor someone else's (the gold standard treats
hedged findings as negative: micro-F1 0.773 this way against 0.749 counting
them positive); ``--uncertain-positive`` counts hedged mentions as positive.

The test tests/unit/text/test_corpus_agreement.py imports :func:`evaluate`.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from listener.assemble import load_terms  # noqa: E402
from listener.text.context import find_mentions  # noqa: E402
from listener.text.terms import Terms  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus" / "reports"

#: Gold-standard label -> our concepts.
LABELS: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("atelectasis",),
    "Cardiomegaly": ("cardiomegaly",),
    "Effusion": ("pleural_effusion",),
    "Infiltration": ("airspace_opacity",),
    "Mass": ("mass",),
    "Nodule": ("lung_nodule",),
    "Pneumonia": ("pneumonia",),
    "Pneumothorax": ("pneumothorax", "tension_pneumothorax"),
    "Consolidation": ("consolidation",),
    "Edema": ("pulmonary_edema",),
    "Emphysema": ("emphysema",),
    "Fibrosis": ("fibrosis",),
    "Pleural_Thickening": ("pleural_thickening",),
    "Hernia": ("hernia",),
}

#: chexpert-labeler column -> our concepts (the observations we model).
CHEXPERT: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("cardiomegaly",),
    "Edema": ("pulmonary_edema",),
    "Consolidation": ("consolidation",),
    "Pneumonia": ("pneumonia",),
    "Atelectasis": ("atelectasis",),
    "Pneumothorax": ("pneumothorax",),
    "Pleural Effusion": ("pleural_effusion",),
    "Fracture": ("fracture",),
    "Lung Lesion": ("lung_nodule", "mass"),
}

# status of one mention: "pos", "neg", "unc" (or None: ignore it)
Status = str | None
Labeler = Callable[[str], list[tuple[str, Status]]]


@dataclass(frozen=True)
class LabelScore:
    label: str
    support: int
    agreement: float
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class Evaluation:
    scores: tuple[LabelScore, ...]
    reports: int
    ms: tuple[float, ...]

    @property
    def micro_f1(self) -> float:
        tp = sum(s.recall * s.support for s in self.scores)
        fn = sum(s.support for s in self.scores) - tp
        pred = sum((s.recall * s.support / s.precision) if s.precision else 0.0 for s in self.scores)
        fp = pred - tp
        return 2 * tp / (2 * tp + fp + fn) if tp else 0.0

    @property
    def mean_agreement(self) -> float:
        return statistics.fmean(s.agreement for s in self.scores)

    def timing(self) -> tuple[float, float, float]:
        q = statistics.quantiles(self.ms, n=100)
        return statistics.median(self.ms), q[94], q[98]


def indiana_reports() -> list[tuple[str, str]]:
    """(uid, findings + impression text) for every Indiana report."""
    with open(CORPUS / "indiana-openi" / "indiana_reports.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        parts = [p for p in (row["findings"], row["impression"]) if p]
        out.append((row["uid"], "\n\n".join(parts)))
    return out


def indiana_gold() -> dict[str, dict[str, int]]:
    with open(CORPUS / "negbio" / "openi_gld_std14.csv", newline="", encoding="utf-8") as fh:
        return {
            row["filename"][3:]: {k: int(v) for k, v in row.items() if k != "filename"} for row in csv.DictReader(fh)
        }


def ours(terms: Terms) -> Labeler:
    """Our compiled approach as a labeler: mention -> (concept, status)."""

    def label(text: str) -> list[tuple[str, Status]]:
        out: list[tuple[str, Status]] = []
        for m in find_mentions(text, 0, None, terms):
            if m.hypothetical or m.experiencer != "patient":
                status: Status = None
            elif m.negated:
                status = "neg"
            elif m.uncertain:
                status = "unc"
            else:
                status = "pos"
            out.append((m.concept, status))
        return out

    return label


def medspacy_labeler(terms: Terms, *, our_rules: bool) -> Labeler | None:
    """medspacy (spaCy simple sentencizer + TargetMatcher + ConText), if importable."""
    try:
        import spacy
        from medspacy.context import ConTextRule
        from medspacy.target_matcher import TargetRule
    except ImportError:
        return None
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    matcher = nlp.add_pipe("medspacy_target_matcher")
    matcher.add(
        [
            TargetRule(name, name.upper(), pattern=rf"\b(?:{'|'.join(pats)})\b")
            for name, pats in terms.concept_patterns.items()
        ]
    )
    if our_rules:
        cats = {
            "negated": "NEGATED_EXISTENCE",
            "uncertain": "POSSIBLE_EXISTENCE",
            "historical": "HISTORICAL",
            "hypothetical": "HYPOTHETICAL",
            "other_experiencer": "FAMILY",
            "pseudo": "PSEUDO",
            "terminate": "TERMINATE",
        }
        rules = []
        for group, trig in terms.modifier_groups.items():
            if trig.category == "definite":
                continue
            direction = {"forward": "FORWARD", "backward": "BACKWARD", "bidirectional": "BIDIRECTIONAL"}[trig.direction]
            if trig.category in ("pseudo", "terminate"):
                direction = trig.category.upper()
            rules.append(
                ConTextRule(
                    group,
                    cats[trig.category],
                    pattern=rf"\b(?:{terms.modifier_patterns[group]})(?!\w)",
                    direction=direction,
                    max_scope=trig.window or None,
                )
            )
        nlp.add_pipe("medspacy_context", config={"rules": None}).add(rules)
    else:
        nlp.add_pipe("medspacy_context")

    def label(text: str) -> list[tuple[str, Status]]:
        out: list[tuple[str, Status]] = []
        for ent in nlp(text).ents:
            if ent._.is_hypothetical or ent._.is_family:
                status: Status = None
            elif ent._.is_negated:
                status = "neg"
            elif ent._.is_uncertain:
                status = "unc"
            else:
                status = "pos"
            out.append((ent.label_.lower(), status))
        return out

    return label


def _score(label: str, pairs: Iterable[tuple[int, int]]) -> LabelScore:
    tp = fp = fn = tn = 0
    for gold, pred in pairs:
        if gold and pred:
            tp += 1
        elif pred:
            fp += 1
        elif gold:
            fn += 1
        else:
            tn += 1
    n = tp + fp + fn + tn
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return LabelScore(label, tp + fn, (tp + tn) / n if n else 0.0, p, r, f)


def evaluate(labeler: Labeler, *, uncertain_positive: bool = False, limit: int | None = None) -> Evaluation:
    """Score a labeler against the Indiana gold standard; time it per report."""
    gold = indiana_gold()
    reports = indiana_reports()[:limit]
    positive = {"pos", "unc"} if uncertain_positive else {"pos"}
    predictions: dict[str, set[str]] = {}
    ms: list[float] = []
    for uid, text in reports:
        t0 = time.perf_counter()
        found = labeler(text)
        ms.append((time.perf_counter() - t0) * 1000)
        predictions[uid] = {c for c, status in found if status in positive}
    scores = []
    for label, concepts in LABELS.items():
        pairs = ((gold[uid][label], int(any(c in predictions[uid] for c in concepts))) for uid, _ in reports)
        scores.append(_score(label, pairs))
    return Evaluation(tuple(scores), len(reports), tuple(ms))


def chexpert_agreement(labeler: Labeler) -> tuple[int, int]:
    """(agreeing, total) observation labels on the chexpert-labeler examples."""
    with open(CORPUS / "chexpert-labeler" / "labeled_reports.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    agree = total = 0
    for row in rows:
        found = labeler(row["Reports"])
        for column, concepts in CHEXPERT.items():
            statuses = [s for c, s in found if c in concepts and s is not None]
            if "pos" in statuses:
                pred = "1.0"
            elif "unc" in statuses:
                pred = "-1.0"
            elif statuses:
                pred = "0.0"
            else:
                pred = ""
            total += 1
            agree += pred == row[column]
    return agree, total


def _table(name: str, ev: Evaluation, chex: tuple[int, int]) -> None:
    med, p95, p99 = ev.timing()
    print(f"\n## {name}")
    print(f"reports {ev.reports}; ms/report median {med:.3f}, p95 {p95:.3f}, p99 {p99:.3f}")
    print(f"micro-F1 {ev.micro_f1:.3f}; mean agreement {ev.mean_agreement:.4f}; chexpert examples {chex[0]}/{chex[1]}")
    print(f"| {'label':<18} | {'gold +':>6} | {'agree':>6} | {'prec':>5} | {'recall':>6} | {'F1':>5} |")
    print(f"|{'-' * 20}|{'-' * 8}|{'-' * 8}|{'-' * 7}|{'-' * 8}|{'-' * 7}|")
    for s in ev.scores:
        print(
            f"| {s.label:<18} | {s.support:>6} | {s.agreement:>6.4f} | {s.precision:>5.3f} | {s.recall:>6.3f} | {s.f1:>5.3f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uncertain-positive", action="store_true", help="count hedged mentions as positive")
    parser.add_argument("--limit", type=int, default=None, help="only the first N reports")
    args = parser.parse_args(argv)
    terms = load_terms()
    kinds: list[tuple[str, Labeler]] = [("compiled rules (ours)", ours(terms))]
    for our_rules in (False, True):
        lab = medspacy_labeler(terms, our_rules=our_rules)
        if lab is not None:
            kinds.append((f"medspacy ConText ({'our triggers' if our_rules else 'default rules'})", lab))
    if len(kinds) == 1:
        print("medspacy not importable here: measuring our approach only")
    for name, lab in kinds:
        lab("warm up: no pneumothorax.")
        ev = evaluate(lab, uncertain_positive=args.uncertain_positive, limit=args.limit)
        _table(name, ev, chexpert_agreement(lab))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
