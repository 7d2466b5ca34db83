"""Benchmarks of Stem-ST: each script answers one question and writes ``results/<name>.{json,md}``
(see ``README.md`` here). Run them as scripts (``python benchmarks/<name>.py``); the package exists
so that shared helpers such as :mod:`benchmarks.synthetic_cohort` import by name."""
