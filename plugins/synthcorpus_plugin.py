"""Registers the Corpora UI plugin (its code lives in the package: synthcorpus.ui)."""

from pathlib import Path

from synthcorpus.ui.plugin import plugin_class

CorporaPlugin = plugin_class(Path(__file__).resolve().parents[1])
