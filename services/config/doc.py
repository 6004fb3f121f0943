"""Render a resolved config as an annotated tree: every key, its value, its default and its help."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def _lines(model: BaseModel, prefix: str) -> list[str]:
    out: list[str] = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            out.append(f"{key}:" + (f"  # {field.description}" if field.description else ""))
            out.extend(_lines(value, key + "."))
        elif isinstance(value, dict) and value and all(isinstance(v, BaseModel) for v in value.values()):
            out.append(f"{key}:" + (f"  # {field.description}" if field.description else ""))
            for sub, item in value.items():
                out.extend(_lines(item, f"{key}.{sub}."))
        else:
            out.append(f"{key} = {_show(value)}" + _note(field, value))
    return out


def _note(field: Any, value: Any) -> str:
    parts = []
    if field.description:
        parts.append(field.description)
    default = field.get_default(call_default_factory=True) if not field.is_required() else None
    if not field.is_required() and default != value:
        parts.append(f"default: {_show(default)}")
    return f"  # {' | '.join(parts)}" if parts else ""


def _show(value: Any) -> str:
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


def render_config(config: BaseModel) -> str:
    return "\n".join(_lines(config, ""))
