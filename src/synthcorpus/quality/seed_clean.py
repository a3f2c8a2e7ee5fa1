"""Seed hygiene: web extracts (and instructions) cleaned before they become seeds and are clustered.

Each text goes through, in order (the first rule broken names the row's reason):

1. **markup** (``clean.strip_markup``): HTML tags removed with :mod:`html.parser` (``script``, ``style``,
   ``head``, ``noscript``, ``template``, ``svg``... dropped with their content; block elements end a line),
   entities decoded, then markdown and wiki markup removed line by line (headings, emphasis, links and
   images, list markers, quotes, code fences, rules, ``{{templates}}``, ``[[links]]``, ``[1]`` references),
   whitespace collapsed. ``too_short``: fewer than ``min_chars`` characters left.
2. **boilerplate** (``clean.boilerplate``): a line is boilerplate when it is short (at most
   BOILERPLATE_MAX_WORDS words) and holds a phrase of BOILERPLATE_PHRASES (cookie and privacy banners,
   "subscribe", "all rights reserved", login, share and "read more" prompts; en, fr, de, es, it, every list
   checked since seeds have no language), when it is navigation only ("Home | About | Contact",
   breadcrumbs) or when it comes from an HTML ``nav``/``header``/``footer``/``aside`` element or one whose
   class/id/role names a cookie banner, a menu, a sidebar... Boilerplate lines are removed; ``boilerplate``:
   they held more than ``max_boilerplate_share`` of the characters, or what is left is under ``min_chars``.
3. **Gopher** (``clean.gopher``): :func:`~synthcorpus.quality.filters.heuristic_reason` with the default
   :class:`~synthcorpus.spec.HeuristicsSpec` (datatrove's reason names: ``dup_line_frac``, ``top_2_gram``,
   ``duplicated_5_n_grams``, ...) on the cleaned text with its lines; texts under ``gopher_min_words`` words
   get :func:`~synthcorpus.quality.filters.repetition_reason` only.
4. ``duplicate``: an exact duplicate (after cleaning) of a text already kept -- checked by the reader
   (:mod:`synthcorpus.seeds`), which also counts every reason.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache
from html.parser import HTMLParser

from ..spec.quality import HeuristicsSpec
from ..spec.seeds import SampleClean
from ..spec.vocabulary import HEURISTIC_REASONS
from ..text import clean as normalize_text
from .filters import fold_phrase, heuristic_reason, phrase_pattern, repetition_reason

# Every reason a seed row can be dropped with, in the order the rules run; the seeds stats list them all.
SEED_CLEAN_REASONS = ("too_short", "boilerplate", *HEURISTIC_REASONS, "duplicate")

# A line holding one of these phrases is boilerplate when it has at most BOILERPLATE_MAX_WORDS words
# (a cookie banner is one or two sentences; a paragraph that discusses privacy policies is longer).
BOILERPLATE_MAX_WORDS = 30
BOILERPLATE_PHRASES: dict[str, tuple[str, ...]] = {
    "en": (
        "we use cookies", "this website uses cookies", "this site uses cookies", "accept cookies", "accept all cookies",
        "cookie policy", "cookie settings", "cookie preferences", "manage cookies", "privacy policy", "privacy notice",
        "terms of use", "terms of service", "terms and conditions", "all rights reserved", "copyright ©",
        "subscribe to our", "subscribe now", "subscribe today", "subscribe for free", "click here to subscribe",
        "unsubscribe", "sign up for our newsletter", "join our newsletter", "our newsletter", "skip to content",
        "skip to main content", "back to top", "share on facebook", "share on twitter", "share this article",
        "share this post", "follow us on", "log in to comment", "sign in to comment", "create an account",
        "read more", "continue reading", "click here", "leave a comment", "related posts", "©",
    ),
    "fr": (
        "nous utilisons des cookies", "ce site utilise des cookies", "ce site web utilise des cookies",
        "accepter les cookies", "tout accepter", "gestion des cookies", "politique de confidentialité",
        "politique relative aux cookies", "mentions légales", "tous droits réservés", "conditions générales",
        "abonnez-vous", "s'abonner à la newsletter", "inscrivez-vous à notre newsletter", "notre newsletter",
        "aller au contenu", "retour en haut", "lire la suite", "partager sur facebook", "partager sur twitter",
        "suivez-nous", "laisser un commentaire", "articles similaires",
    ),
    "de": (
        "wir verwenden cookies", "diese website verwendet cookies", "diese seite verwendet cookies",
        "cookies akzeptieren", "alle akzeptieren", "cookie-einstellungen", "datenschutzerklärung",
        "datenschutzhinweise", "impressum", "alle rechte vorbehalten", "nutzungsbedingungen", "newsletter abonnieren",
        "jetzt abonnieren", "melden sie sich für unseren newsletter", "unser newsletter", "zum inhalt springen",
        "zurück nach oben", "weiterlesen", "auf facebook teilen", "auf twitter teilen", "folgen sie uns",
        "kommentar schreiben", "ähnliche beiträge",
    ),
    "es": (
        "utilizamos cookies", "usamos cookies", "este sitio web utiliza cookies", "este sitio utiliza cookies",
        "aceptar cookies", "aceptar todas", "política de cookies", "política de privacidad", "aviso legal",
        "todos los derechos reservados", "términos y condiciones", "suscríbete", "suscríbase", "nuestro boletín",
        "nuestra newsletter", "saltar al contenido", "volver arriba", "leer más", "seguir leyendo",
        "compartir en facebook", "compartir en twitter", "síguenos", "deja un comentario", "artículos relacionados",
    ),
    "it": (
        "utilizziamo i cookie", "usiamo i cookie", "questo sito utilizza cookie", "questo sito utilizza i cookie",
        "accetta i cookie", "accetta tutti", "informativa sulla privacy", "informativa cookie", "cookie policy",
        "tutti i diritti riservati", "termini e condizioni", "iscriviti alla newsletter", "iscriviti alla nostra",
        "la nostra newsletter", "vai al contenuto", "torna su", "leggi di più", "continua a leggere",
        "condividi su facebook", "condividi su twitter", "seguici su", "lascia un commento", "articoli correlati",
    ),
}
# Lines that are boilerplate when they are nothing else (trailing punctuation aside): words that are also
# ordinary content words ("Anzeige" is a display too) only count alone on their line.
BOILERPLATE_LINES = frozenset({
    "advertisement", "sponsored", "menu", "home", "share", "tweet", "print", "email", "search", "login", "log in",
    "sign in", "sign up", "register", "publicité", "menu principal", "accueil", "partager", "rechercher", "anzeige",
    "startseite", "teilen", "suche", "publicidad", "inicio", "compartir", "buscar", "pubblicità", "condividi",
    "cerca",
})


# HTML: elements dropped with their content; elements whose text is boilerplate; elements that end a line.
_SKIP_TAGS = frozenset({"script", "style", "head", "noscript", "template", "svg", "iframe", "object", "canvas",
                        "select", "button", "ref"})
_BOILERPLATE_TAGS = frozenset({"nav", "header", "footer", "aside", "menu"})
_BOILERPLATE_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "menu", "menubar", "dialog"})
_BOILERPLATE_CLASSES = frozenset({"cookie", "cookies", "consent", "gdpr", "newsletter", "subscribe", "breadcrumb",
                                  "breadcrumbs", "nav", "navbar", "navigation", "menu", "sidebar", "footer", "share",
                                  "social", "advert", "ads", "promo", "popup", "modal"})
_BLOCK_TAGS = frozenset({"p", "div", "br", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6",
                         "tr", "td", "th", "table", "thead", "tbody", "section", "article", "main", "blockquote",
                         "pre", "hr", "figure", "figcaption", "address", "title", "body", "html", "form", "fieldset",
                         "details", "summary", "caption"} | _BOILERPLATE_TAGS)
_VOID_TAGS = frozenset({"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source", "track",
                        "wbr", "param"})
_INLINE_TAGS = frozenset({"a", "span", "b", "i", "u", "s", "em", "strong", "small", "big", "sup", "sub", "img", "code",
                          "abbr", "cite", "q", "mark", "label", "font", "center", "ins", "del", "time", "kbd", "var",
                          "samp", "input", "textarea", "option", "picture", "video", "audio", "source", "meta", "link"})
# Markup is parsed as HTML only when it holds a known tag (so "x<y and y>z" stays text) or a comment/doctype.
_HTML_TAG = re.compile(
    r"</?(?:%s)(?:\s[^<>]*)?/?>|<!--|<!doctype" % "|".join(
        sorted(_SKIP_TAGS | _BOILERPLATE_TAGS | _BLOCK_TAGS | _VOID_TAGS | _INLINE_TAGS, key=len, reverse=True)),
    re.IGNORECASE,
)
_ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-fA-F]+|[a-zA-Z][a-zA-Z0-9]*);?")
_CLASS_SPLIT = re.compile(r"[\s_-]+")

# Markdown and wiki markup, line by line.
_DROP_LINE = re.compile(
    r"^\s*(?:(?:```|~~~).*|([-*_=])(?:\s*\1){2,}|\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?"
    r"|\[\[(?:category|file|image|catégorie|fichier|kategorie|datei|categoría|archivo|categoria):[^\]]*\]\]"
    r"|\{\|.*|\|\}.*|\|-.*)\s*$",
    re.IGNORECASE,
)
_LINE_PREFIX = re.compile(r"^\s*(?:#{1,6}\s+|(?:>\s?)+|[-*+\u2022]\s+)+")
_WIKI_HEADING = re.compile(r"^\s*(={1,6})\s*(.+?)\s*\1\s*$")
_MD_HEADING_TAIL = re.compile(r"\s+#+\s*$")
_INLINE: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"!\[[^\]]*\]\([^)]*\)"), ""),  # images
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # [text](url)
    (re.compile(r"\[([^\]]+)\]\[[^\]]*\]"), r"\1"),  # [text][ref]
    (re.compile(r"^\s*\[[^\]]+\]:\s*\S+.*$"), ""),  # [ref]: url
    (re.compile(r"\{\{[^{}]*\}\}"), ""),  # {{template}} (innermost first: applied until none is left)
    (re.compile(r"\[\[[^\]|]*\|([^\]]*)\]\]"), r"\1"),  # [[target|text]]
    (re.compile(r"\[\[([^\]]*)\]\]"), r"\1"),  # [[target]]
    (re.compile(r"\[(?:https?|ftp)://\S+\s+([^\]]+)\]"), r"\1"),  # [http://url text]
    (re.compile(r"\[(?:\d+|citation needed|note \d+)\]", re.IGNORECASE), ""),  # reference marks
    (re.compile(r"'''(.+?)'''"), r"\1"),
    (re.compile(r"''(.+?)''"), r"\1"),
    (re.compile(r"\*\*(.+?)\*\*"), r"\1"),
    (re.compile(r"__(?=[^_\n]*\s)(.+?)__"), r"\1"),  # not __init__: underscore emphasis needs a space inside
    (re.compile(r"~~(.+?)~~"), r"\1"),
    (re.compile(r"(?<![\w*])\*(?!\s)([^*\n]+?)(?<!\s)\*(?![\w*])"), r"\1"),
    (re.compile(r"(?<![\w_])_(?=[^_\n]*\s)(?!\s)([^_\n]+?)(?<!\s)_(?![\w_])"), r"\1"),
    (re.compile(r"`([^`\n]*)`"), r"\1"),
)
_TEMPLATE = _INLINE[4][0]
_SPACE_BEFORE_STOP = re.compile(r"\s+([.,])(?=\s|$)")

# Navigation-only lines: at least three short items between separators, no sentence punctuation at the end.
_NAV_SEPARATOR = re.compile(r"\s+[|\u00b7\u2022\u00bb\u203a>/\u2013]\s+|\s*\|\s*")
_NAV_MAX_ITEM_WORDS = 4
_WORD = re.compile(r"\w+", re.UNICODE)  # quality.filters' word: a run of letters/digits


class _Lines(HTMLParser):
    """Text lines of an HTML fragment, each flagged when it comes from a boilerplate element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[tuple[str, bool]] = []
        self._parts: list[str] = []
        self._part_boiler = False
        self._stack: list[tuple[str, str | None]] = []  # (tag, "skip" | "boiler" | None)
        self._skip = 0
        self._boiler = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self._flush()
        if tag in _VOID_TAGS:
            return
        kind = None
        if tag in _SKIP_TAGS:
            kind = "skip"
        elif tag in _BOILERPLATE_TAGS or _boilerplate_attrs(attrs):
            kind = "boiler"
        self._stack.append((tag, kind))
        self._skip += kind == "skip"
        self._boiler += kind == "boiler"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCK_TAGS:
            self._flush()
        if not any(t == tag for t, _ in self._stack):
            return  # a stray end tag
        while self._stack:  # close what the author left open inside it
            t, kind = self._stack.pop()
            self._skip -= kind == "skip"
            self._boiler -= kind == "boiler"
            if t == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        boiler = self._boiler > 0
        if boiler != self._part_boiler and "".join(self._parts).strip():
            self._flush()
        self._part_boiler = boiler
        self._parts.append(data)

    def _flush(self) -> None:
        text = " ".join("".join(self._parts).split())
        if text:
            self.lines.append((text, self._part_boiler))
        self._parts = []
        self._part_boiler = self._boiler > 0

    def close(self) -> None:
        super().close()
        self._flush()


def _boilerplate_attrs(attrs: list[tuple[str, str | None]]) -> bool:
    for name, value in attrs:
        if not value:
            continue
        if name == "role" and value.strip().lower() in _BOILERPLATE_ROLES:
            return True
        if name in ("class", "id") and _BOILERPLATE_CLASSES.intersection(_CLASS_SPLIT.split(value.lower())):
            return True
    return False


def _strip_line(line: str) -> str | None:
    """One line without markdown/wiki markup, whitespace collapsed; None for a line that is markup only."""
    if _DROP_LINE.match(line):
        return None
    if heading := _WIKI_HEADING.match(line):
        line = heading.group(2)
    had_heading = line.lstrip().startswith("#")
    line = _LINE_PREFIX.sub("", line)
    if had_heading:
        line = _MD_HEADING_TAIL.sub("", line)
    for _ in range(5):  # nested templates
        if not _TEMPLATE.search(line):
            break
        line = _TEMPLATE.sub("", line)
    for pattern, repl in _INLINE:
        line = pattern.sub(repl, line)
    line = _SPACE_BEFORE_STOP.sub(r"\1", " ".join(line.split()))  # "a link and ![img](x)." -> "a link and."
    return line if line else None


def markup_lines(text: str) -> list[tuple[str, bool]]:
    """The text's lines with markup removed (see the module docs), each with whether it comes from an HTML
    boilerplate element; ``("", False)`` separates paragraphs (blank lines, HTML blocks)."""
    if _HTML_TAG.search(text):
        parser = _Lines()
        parser.feed(text)
        parser.close()
        raw: list[tuple[str, bool]] = []
        for line, boiler in parser.lines:  # every HTML block is a paragraph
            raw.extend(((line, boiler), ("", False)))
    else:
        if _ENTITY.search(text):
            text = html.unescape(text)
        raw = [(line, False) for line in text.split("\n")]
    out: list[tuple[str, bool]] = []
    for line, boiler in raw:
        stripped = _strip_line(line) if line.strip() else None
        if stripped is not None:
            out.append((stripped, boiler))
        elif not line.strip() and out and out[-1][0]:
            out.append(("", False))
    while out and not out[-1][0]:
        out.pop()
    return out


def strip_markup(text: str) -> str:
    """The text without HTML, markdown and wiki markup: lines kept, paragraphs separated by a blank line."""
    return "\n".join(line for line, _ in markup_lines(text))


@lru_cache(maxsize=1)
def _phrase_pattern() -> re.Pattern[str]:
    return phrase_pattern(tuple(sorted({fold_phrase(p) for lang in BOILERPLATE_PHRASES.values() for p in lang})))


def is_navigation(line: str) -> bool:
    """A navigation-only line: at least three short items between separators ('Home | About | Contact',
    'Home > Garden > Soil'), not ending like a sentence."""
    if line.rstrip().endswith((".", "!", "?", ":", ";")):
        return False
    items = [i for i in _NAV_SEPARATOR.split(line.strip()) if i.strip()]
    return len(items) >= 3 and all(0 < len(_WORD.findall(i)) <= _NAV_MAX_ITEM_WORDS for i in items)


def is_boilerplate(line: str) -> bool:
    """A short line with a boilerplate phrase (any language), a BOILERPLATE_LINES word alone, or a
    navigation-only line."""
    if not line:
        return False
    folded = fold_phrase(line)
    if folded.rstrip(".:!|»›> ").strip() in BOILERPLATE_LINES:
        return True
    if len(_WORD.findall(line)) <= BOILERPLATE_MAX_WORDS and _phrase_pattern().search(folded):
        return True
    return is_navigation(line)


class SeedCleaner:
    """The :class:`synthcorpus.seeds.Cleaner` of one source: ``cleaner(raw) -> (text, reason)``."""

    reasons = SEED_CLEAN_REASONS

    def __init__(self, clean: SampleClean, min_chars: int) -> None:
        self.clean = clean
        self.min_chars = min_chars
        self.heuristics = HeuristicsSpec()

    def __call__(self, raw: str) -> tuple[str, str | None]:
        c = self.clean
        if not c.enabled:
            return normalize_text(raw), None
        lines = markup_lines(raw) if c.strip_markup else [(line, False) for line in raw.split("\n")]
        text = "\n".join(line for line, _ in lines)
        if len(normalize_text(text)) < self.min_chars:
            return "", "too_short"
        if c.boilerplate:
            flags = [boiler or is_boilerplate(line) for line, boiler in lines]
            total = sum(len(line) for line, _ in lines)
            boiler_chars = sum(len(line) for (line, _), flag in zip(lines, flags) if flag)
            if boiler_chars:
                kept = [line for (line, _), flag in zip(lines, flags) if not flag]
                text = "\n".join(kept)
                if boiler_chars / total > c.max_boilerplate_share or len(normalize_text(text)) < self.min_chars:
                    return "", "boilerplate"
        text = re.sub(r"\n{3,}", "\n\n", text).strip()
        if c.gopher:
            words = _WORD.findall(text)
            if len(words) >= c.gopher_min_words:
                reason = heuristic_reason(text, self.heuristics, words)
            else:
                reason = repetition_reason(text, self.heuristics, words) if words else "too_short"
            if reason is not None:
                return "", reason
        return normalize_text(text), None
