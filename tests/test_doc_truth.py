"""The docs tell the truth: every ``stem …`` command line in README.md, docs/ and the benchmarks
index names a command that exists and only flags that command takes, and every Python snippet the
user guide shows runs (``docs_snippets``, executed on the synthetic prepared dataset)."""

from __future__ import annotations

import re

import pytest
import typer
from conftest import ROOT

from stem_st.cli import app

#: the files a user reads commands from
DOC_FILES = [ROOT / "README.md", ROOT / "benchmarks" / "README.md",
             *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "docs").rglob("*.py"))]
DOC_FILES = [p for p in DOC_FILES if "_build" not in p.parts and "results" not in p.parts]


def command_tree():
    return typer.main.get_command(app)


def command_lines(text: str) -> list[str]:
    """``stem …`` invocations: inside code spans, fenced blocks and comments, joined over ``\\``
    continuations; placeholders (``…``, ``...``, ``[`` options ``]``) end the parse of a line."""
    text = text.replace("\\\n", " ")
    found = []
    for m in re.finditer(r"(?:^|[`$\s(])(stem(?: [a-z][\w-]*)(?:[^`\n]*))", text, re.M):
        line, _, comment = m.group(1).partition("#")  # a shell comment may name another command
        found.append(line.strip())
        found += command_lines(comment) if comment else []
    return found


def flags_of(line: str) -> tuple[list[str], list[str]]:
    """(command path, --flags) of one invocation; the path stops at the first non-command word."""
    words = re.split(r"\s+", line)
    group, path = command_tree(), []
    for w in words[1:]:
        if hasattr(group, "commands") and w in group.commands:
            path.append(w)
            group = group.commands[w]
        else:
            break
    flags = re.findall(r"(?<![\w-])(--[a-z][\w-]*)", line)
    return path, flags


def params_of(path: list[str]) -> set[str]:
    cmd = command_tree()
    for w in path:
        cmd = cmd.commands[w]
    names = {"--help"}
    for p in cmd.params:
        names |= set(p.opts) | set(p.secondary_opts)
    return names


def all_invocations() -> list[tuple[str, str]]:
    out = []
    for f in DOC_FILES:
        for line in command_lines(f.read_text()):
            out.append((f.relative_to(ROOT).as_posix(), line))
    return out


def wrong_flags(invocations: list[tuple[str, str]]) -> list[str]:
    bad = []
    for where, line in invocations:
        path, flags = flags_of(line)
        if not path:
            continue  # prose ("stem cells"), or a word after `stem` that is not a command
        known = params_of(path)
        if hasattr(_cmd(path), "commands"):
            continue  # `stem complete fit|evaluate|apply …`: a list of subcommands, not one invocation
        bad += [f"{where}: stem {' '.join(path)} has no {f} ({line[:90]})" for f in flags if f not in known]
    return bad


def _cmd(path: list[str]):
    cmd = command_tree()
    for w in path:
        cmd = cmd.commands[w]
    return cmd


#: the guide page of each command: a flag it names in prose (`--flag`) must be one of that command's
#: or of a command the page invokes
PAGES = {"prepare.md": [["prepare"]], "train.md": [["train"]], "predict.md": [["predict"]],
         "slides.md": [["predict-slide"]], "evaluate.md": [["evaluate"]], "view.md": [["view"]],
         "complete.md": [["complete", "fit"], ["complete", "evaluate"], ["complete", "apply"]]}


def prose_flags(name: str, text: str) -> list[str]:
    """Flags a guide page names in code spans that none of its commands takes."""
    paths = [*PAGES.get(name, []), *(flags_of(line)[0] for line in command_lines(text))]
    known = set().union(*(params_of(p) for p in paths if p and not hasattr(_cmd(p), "commands")))
    # torchrun's and the benchmark scripts' own flags are theirs
    spans = [s for s in re.findall(r"`([^`\n]+)`", text) if "torchrun" not in s and ".py" not in s]
    flags = {f for span in spans for f in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", span)}
    return sorted(f"{name}: {f}" for f in flags - known)


def test_flags_named_in_a_guide_page_exist():
    bad = [b for name in PAGES for b in prose_flags(name, (ROOT / "docs" / "guide" / name).read_text())]
    assert not bad, "\n".join(bad)
    assert prose_flags("prepare.md", "`--max-pixels` bounds what …") == ["prepare.md: --max-pixels"]


def test_every_documented_stem_command_line_uses_real_flags():
    invocations = all_invocations()
    assert len(invocations) > 40  # the README and the guide show the whole pipeline
    assert not (bad := wrong_flags(invocations)), "\n".join(bad)


def test_the_flag_check_catches_a_planted_wrong_flag():
    planted = [("planted.md", "stem train PREP --out RUN --overwrite"),
               ("planted.md", "stem prepare --data D --max-pixels 100"),
               ("planted.md", "stem complete apply COMP --sections C6 --out D --num-sample 4")]
    assert len(wrong_flags(planted)) == 3
    assert not wrong_flags([("ok.md", "stem train PREP --out RUN --resume --steps 600")])


@pytest.mark.parametrize("text, n", [("run `stem predict RUN --sections C6`", 1),
                                     ("```bash\nstem view P.h5ad \\\n  --truth PREP\n```", 1),
                                     ("stem cells differ", 0)])
def test_command_lines_are_found_in_code_spans_blocks_and_continuations(text, n):
    assert len([line for line in command_lines(text) if flags_of(line)[0]]) == n


# --- Python snippets: every call into stem_st that the docs show binds to the real signature ---

#: the names the guide gives its objects, and their classes (``model = st.StemModel.fit(...)``)
OBJECTS = {"model": "StemModel", "prep": "PreparedDataset", "settings": "TrainSettings"}
PY_DOCS = [p for p in DOC_FILES if p.suffix in (".md", ".py")]


def snippets(text: str, suffix: str) -> list[str]:
    """Fenced ``python`` blocks (or a whole jupytext file) and inline spans that call ``st.``."""
    blocks = [text] if suffix == ".py" else re.findall(r"```python\n(.*?)```", text, re.S)
    spans = re.findall(r"`([^`\n]*\b(?:st|model|prep)\.[A-Za-z_.]+\([^`\n]*\))`", text)
    return blocks + spans


def _target(func):
    """The stem_st object a call's function expression names, or None."""
    import ast

    import stem_st as st

    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return None, False
    parts.reverse()
    if func.id == "st":
        obj = st
    elif func.id in OBJECTS:
        from stem_st.data.dataset import PreparedDataset

        obj = PreparedDataset if OBJECTS[func.id] == "PreparedDataset" else getattr(st, OBJECTS[func.id])
        if parts and isinstance(obj, type) and callable(getattr(obj, parts[0], None)):
            raw = obj.__dict__.get(parts[0]) or getattr(obj, parts[0])
            bound = not isinstance(raw, (classmethod, staticmethod))  # an instance method: self is given
            return getattr(obj, parts[0]), bound
        return None, False
    else:
        return None, False
    for p in parts:
        if not hasattr(obj, p):
            return f"st.{'.'.join(parts)} does not exist", False
        obj = getattr(obj, p)
    return obj, False


def call_errors(code: str) -> list[str]:
    """Calls into stem_st in ``code`` that do not bind to the callee's signature."""
    import ast
    import inspect

    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []  # an elided or partial example (`st.PredictSettings(num_samples, …`)
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        obj, self_given = _target(node.func)
        if obj is None:
            continue
        if isinstance(obj, str):
            bad.append(obj)
            continue
        try:
            sig = inspect.signature(obj)
        except (TypeError, ValueError):
            continue
        params = list(sig.parameters.values())
        if self_given:
            params = params[1:]
        sig = sig.replace(parameters=params)
        starred = any(isinstance(a, ast.Starred) for a in node.args)
        args = [object() for a in node.args if not isinstance(a, ast.Starred)]
        kwargs = {k.arg: object() for k in node.keywords if k.arg is not None}
        double = any(k.arg is None for k in node.keywords)
        has_var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
        text = ast.unparse(node)
        if double and not has_var_kw:
            bad.append(f"{text}: {getattr(obj, '__qualname__', obj)} takes no **keywords")
            continue
        try:
            (sig.bind_partial if starred or double else sig.bind)(*args, **kwargs)
        except TypeError as exc:
            bad.append(f"{text}: {exc}")
    return bad


def test_every_python_call_the_docs_show_binds_to_the_real_signature():
    bad, calls = [], 0
    for f in PY_DOCS:
        for code in snippets(f.read_text(), f.suffix):
            calls += code.count("st.")
            bad += [f"{f.relative_to(ROOT)}: {e}" for e in call_errors(code)]
    assert calls > 20
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("code", ['st.get_recipe("default", cond_noise=1.0)', "st.get_recipe(name, **changes)",
                                  'st.TrainSettings(prep="p", step=600)', "model.predict_adata(a, b, c, d, e)",
                                  'st.read.visum("outs")'])
def test_the_signature_check_catches_a_planted_wrong_call(code):
    assert call_errors(code)


# --- Figures: the README's and the guide's benchmark figures are written from the committed results ---


def _doc_figures():
    import importlib.util

    spec = importlib.util.spec_from_file_location("doc_figures", ROOT / "benchmarks" / "doc_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_quoted_figures_are_the_committed_results():
    figures = _doc_figures()
    data = figures.load()
    found = set()
    for page in figures.PAGES:
        text = page.read_text()
        found |= set(re.findall(r"<!-- figures:([a-z-]+) -->", text))
        assert not figures.stale(text, data), f"{page.name}: run benchmarks/doc_figures.py"
    assert found == set(figures.BLOCKS)


def test_the_figure_check_catches_a_planted_stale_number():
    figures = _doc_figures()
    data = figures.load()
    text = (ROOT / "README.md").read_text()
    row = next(r for r in text.splitlines() if r.startswith("| Stem `default` as"))
    cell = row.split(" | ")[1]  # the shipped row's PCC-50
    planted = text.replace(row, row.replace(f" {cell} ", f" {float(cell) + 0.001:.3f} ", 1))
    assert planted != text and figures.stale(planted, data) == ["readme-accuracy"]
    a1 = next(r for r in text.splitlines() if r.startswith("| A1"))
    assert figures.stale(text.replace(a1, a1.replace("0.", "0.0", 1)), data) == ["readme-folds"]


# --- The benchmarks index: each headline figure is in the results file its row links to ---

_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?: \d{3})+(?:\.\d+)?|\d+\.\d+|\d{3,})(?![\w])")


def _numbers(text: str) -> list[str]:
    return [n.replace(" ", "") for n in _NUMBER.findall(text.replace("\u202f", " "))]


def _unsourced(line: str) -> list[str]:
    """The figures of an index row's headline cell (outside generated blocks) that no number of
    its linked results files gives, at the cell's precision."""
    cell = re.sub(r"<!-- figures:[a-z-]+ -->.*?<!-- /figures -->", "", line.split(" | ")[4])
    source = ""
    for name in re.findall(r"\(results/([a-z0-9_]+)\.md\)", line):
        for ext in (".md", ".json"):
            path = ROOT / "benchmarks" / "results" / (name + ext)
            source += path.read_text() if path.is_file() else ""
    have = set(_numbers(source))
    missing = []
    for n in _numbers(cell):
        places = len(n.split(".")[1]) if "." in n else 0
        if n not in have and not any(f"{float(h):.{places}f}" == n for h in have if "." in h):
            missing.append(n)
    return missing


def test_every_figure_of_the_benchmarks_index_is_in_its_results_file():
    rows = [r for r in (ROOT / "benchmarks" / "README.md").read_text().splitlines() if r.startswith("| `")]
    assert len(rows) > 15
    assert {r.split(" | ")[0]: _unsourced(r) for r in rows if _unsourced(r)} == {}


def test_the_index_check_catches_a_planted_stale_figure():
    row = next(r for r in (ROOT / "benchmarks" / "README.md").read_text().splitlines()
               if r.startswith("| `embed_speed.py`"))
    assert _unsourced(row) == []
    assert _unsourced(row.replace("1.65 s", "1.75 s")) == ["1.75"]
