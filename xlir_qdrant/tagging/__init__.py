"""Zero-shot multilingual tagging: a shipped 11-language vocabulary and a tagger."""

from __future__ import annotations

from ..errors import BadQuery


def resolve_tag(text: str) -> str:
    """A concept id from an id or a name in any language of the shipped vocabulary."""
    from ..vocab import lookup

    concept = lookup(text.strip())
    if concept is None:
        raise BadQuery(f"unknown tag {text!r}: use a tag id or a name in any language of the built-in "
                       f"vocabulary (e.g. cat, Katze, 猫; `xlir tag PHOTO` shows an image's tags)")
    return concept.id
