"""Names a user mistyped: each unknown option with the known name it probably meant."""

from __future__ import annotations

import difflib


def unknown_names(given, known: list[str]) -> str:
    """``"'epoch' (did you mean 'epochs'?), 'colour'"``: the names of ``given`` not in ``known``
    (all of ``given`` if none is unknown), each with its closest known name when there is one."""
    unknown = sorted(set(given) - set(known)) or sorted(given)
    guesses = {k: difflib.get_close_matches(k, known, n=1) for k in unknown}
    return ", ".join(repr(k) + (f" (did you mean {guesses[k][0]!r}?)" if guesses[k] else "") for k in unknown)
