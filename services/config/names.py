"""Messages for unknown names (config keys, objectives, rewards, columns): the nearest valid one, if any."""

from __future__ import annotations

import difflib


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'{hint} (valid: {', '.join(sorted(valid))})"
