"""The error of the topic stage's inputs and libraries."""

from __future__ import annotations


class TopicError(ValueError):
    """The seeds table or the label template is unusable; the message names the file and what was expected."""
