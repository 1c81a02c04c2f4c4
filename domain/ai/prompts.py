"""Prompt templates: versioned text files under `domain/ai/prompts/<id>/v<version>.txt`.

A file has `#` comment lines at the top, then a `--- system` and a `--- user` section.
Placeholders are `$name` (string.Template); every value is inserted as JSON, so what
people wrote reaches the model as quoted data. A changed prompt is a new file with the
next version: the version recorded with each call then says which wording produced it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from string import Template
from typing import Any

from domain.ai.chat import Message

PROMPTS_DIR = Path(__file__).parent / "prompts"
SECTIONS = ("system", "user")


class TemplateError(RuntimeError):
    """A prompt file is missing, malformed, or a value for one of its placeholders is missing."""


@dataclass(frozen=True)
class PromptTemplate:
    id: str
    version: int
    system: Template
    user: Template

    def render(self, values: dict[str, Any]) -> tuple[Message, ...]:
        """Return the system and user messages with `values` inserted as JSON.

        Raises TemplateError when a placeholder has no value.
        """
        quoted = {name: json.dumps(value, ensure_ascii=False, indent=1) for name, value in values.items()}
        try:
            return (
                Message("system", self.system.substitute(quoted)),
                Message("user", self.user.substitute(quoted)),
            )
        except KeyError as exc:
            raise TemplateError(f"prompt {self.id} v{self.version} needs a value for {exc}") from exc


@cache
def load(template_id: str, version: int) -> PromptTemplate:
    """Read `prompts/<template_id>/v<version>.txt` (once per process).

    Raises TemplateError when the file is missing or lacks a section.
    """
    path = PROMPTS_DIR / template_id / f"v{version}.txt"
    if not path.is_file():
        raise TemplateError(f"no prompt template {template_id} v{version} ({path})")
    sections = _sections(path.read_text(encoding="utf-8"))
    missing = [name for name in SECTIONS if not sections.get(name)]
    if missing:
        raise TemplateError(f"prompt {template_id} v{version} lacks the {', '.join(missing)} section")
    return PromptTemplate(template_id, version, Template(sections["system"]), Template(sections["user"]))


def _sections(text: str) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("--- "):
            current = sections.setdefault(line[4:].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in sections.items()}
