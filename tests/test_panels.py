"""Gene panels chosen from training sections only."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import HER2ST

from stem_st.data.panels import EXCLUDED_PREFIXES, choose_panel, parse_panel_spec
from stem_st.data.readers import read_section
from stem_st.errors import StemError


@pytest.fixture(scope="module")
def sections():
    return {s: read_section("her2st", HER2ST, s) for s in ("C2", "C3", "C6", "A1")}


def test_hmhvg_panel_properties(sections):
    train = [sections[s] for s in ("C2", "C3", "A1")]
    panel = choose_panel("hmhvg:100", train, list(sections.values()))
    assert len(panel) == 100 == len(set(panel))
    assert not any(g.startswith(EXCLUDED_PREFIXES) for g in panel)
    for a in sections.values():
        assert set(panel) <= set(a.var_names)
    # every chosen gene ranks within the top-k by mean and by std for the same k
    genes = [g for g in train[0].var_names if all(g in a.var_names for a in sections.values())]
    x = np.concatenate([a[:, genes].X.toarray() for a in train])
    mean_rank = {g: r for r, g in enumerate(np.array(genes)[np.argsort(-x.mean(0))])}
    assert "ERBB2" in panel  # the HER2 gene of HER2+ tumours is a top-expressed variable gene
    assert max(mean_rank[g] for g in panel) < len(genes) / 4


def test_holdout_never_shapes_its_own_panel(sections):
    train = [sections[s] for s in ("C2", "C3", "A1")]
    via_choose = choose_panel("hmhvg:50", train, list(sections.values()))
    # scrambling the held-out section's counts cannot change the chosen genes
    c6 = sections["C6"].copy()
    rng = np.random.default_rng(0)
    c6.X = c6.X.copy()
    c6.X.data = rng.integers(0, 1000, size=c6.X.data.shape).astype(np.int32)
    again = choose_panel("hmhvg:50", train, [*train, c6])
    assert via_choose == again
    # whereas letting it in as a training section does change them
    assert choose_panel("hmhvg:50", [*train, c6], [*train, c6]) != via_choose


def test_deg_panel_uses_pathologist_labels(sections):
    panel = choose_panel("deg:40", [sections["A1"], sections["C2"]], list(sections.values()))
    assert len(panel) == 40
    with pytest.raises(StemError, match="pathologist labels"):
        choose_panel("deg:40", [sections["C2"]], list(sections.values()))


def test_file_panel_and_bad_specs(sections, tmp_path):
    f = tmp_path / "genes.txt"
    f.write_text("ERBB2\nGRB7\n")
    assert choose_panel(f"file:{f}", [sections["C2"]], list(sections.values())) == ["ERBB2", "GRB7"]
    f.write_text("ERBB2\nNOT_A_GENE\n")
    with pytest.raises(StemError, match="absent"):
        choose_panel(f"file:{f}", [sections["C2"]], list(sections.values()))
    for bad in ("hmhvg", "hmhvg:x", "top:5", "hvg:0"):
        with pytest.raises(StemError):
            parse_panel_spec(bad)
