"""A Sphinx check that the API reference documents every public name of ``stem_st`` (its
``__all__``): a missing entry is a warning, so a build with -W fails."""

from __future__ import annotations

from sphinx.application import Sphinx
from sphinx.util import logging

import stem_st

logger = logging.getLogger(__name__)


def _check(app: Sphinx, env) -> None:
    documented = set(env.get_domain("py").objects)
    for name in stem_st.__all__:
        if name.startswith("__"):
            continue
        if f"stem_st.{name}" not in documented:
            logger.warning(f"the API reference does not document stem_st.{name} (add it to docs/api/)")


def setup(app: Sphinx) -> dict:
    app.connect("env-check-consistency", _check)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
