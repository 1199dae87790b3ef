"""The QA evaluation: a labeled set built at test time from the shared corpus.

``inject.py`` reads the real reports and makes copies with one defect each
(plain text in, plain text out; it imports nothing from ``listener``).
``evaluate.py`` turns those documents into Reports, runs the real QA engine
and measures detection, clean false positives and ms/report. ``bench/qa.py``
prints the figures; ``test_evaluation.py`` keeps them from sliding back.
"""
