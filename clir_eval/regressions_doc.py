"""Score tables of the docs, generated from the regression specs (as Anserini generates its regression pages).

A page marks each generated table with a pair of HTML comments::

    <!-- BEGIN GENERATED: regressions/default-study.yaml regressions/ntrex.yaml:me5-small metric=mrr -->
    | system | sw | ha | de |
    ...
    <!-- END GENERATED -->

The BEGIN line names one or more specs (``regressions/<name>.yaml``, read with
:func:`clir_eval.regressions.load_spec`), each optionally followed by ``:system,system`` to pick and order its rows,
and ``metric=`` (default ``mrr``). :func:`render_page` rewrites every block's body from the specs' expected scores;
:func:`stale_blocks` says which committed bodies differ from what the specs give (the docs test uses it).

A study with one student per language (``ha-kd``, ``ig-kd``, ...) reads best as one row per method: a system
written ``{lang}-kd`` fills each language's cell from that language's own system, and ``via=am:ha,rw:lg`` reads a
zero-shot language through another language's students (am's cell is ``ha-kd`` on am's queries)::

    <!-- BEGIN GENERATED: regressions/low-resource.yaml:teacher,{lang}-kd via=am:ha,rw:lg -->
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from clir_eval.regressions import RegressionSpec, SpecError, load_spec

_BLOCK = re.compile(r"(<!-- BEGIN GENERATED: (?P<args>[^>\n]*?) -->\n)(?P<body>.*?)(<!-- END GENERATED -->)", re.S)
_SPEC = re.compile(r"^(?:regressions/)?(?P<name>[A-Za-z0-9._-]+?)(?:\.yaml)?(?::(?P<systems>\S+))?$")


@dataclass(frozen=True)
class Source:
    """One spec of a block and the systems taken from it (empty = all, in the spec's order)."""

    spec: str
    systems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Block:
    """What one BEGIN GENERATED line asks for."""

    sources: tuple[Source, ...]
    metric: str = "mrr"
    via: tuple[tuple[str, str], ...] = ()  # (language, the language whose students it is read through)

    def system_for(self, row: str, lang: str) -> str:
        """The spec system that fills ``row``'s cell for ``lang``: ``row`` itself, or a ``{lang}`` row filled in."""
        return row.replace("{lang}", dict(self.via).get(lang, lang))


def parse_marker(args: str) -> Block:
    """The block a BEGIN line's arguments describe (``spec[:sys,sys] ... [metric=M] [via=L:M,...]``).

    Raises:
        SpecError: an argument that is neither a spec, ``metric=`` nor ``via=<language>:<language>,...``.
    """
    sources: list[Source] = []
    metric = "mrr"
    via: list[tuple[str, str]] = []
    for token in args.split():
        if token.startswith("metric="):
            metric = token.removeprefix("metric=")
            continue
        if token.startswith("via="):
            for pair in token.removeprefix("via=").split(","):
                lang, sep, through = pair.partition(":")
                if not (sep and lang and through):
                    raise SpecError(f"generated block {args!r}: {pair!r} in via= is not <language>:<language>")
                via.append((lang, through))
            continue
        match = _SPEC.match(token)
        if match is None:
            raise SpecError(f"generated block {args!r}: {token!r} is not regressions/<name>.yaml[:system,...] "
                            "or metric=<name>")
        systems = tuple(s for s in (match["systems"] or "").split(",") if s)
        sources.append(Source(match["name"], systems))
    if not sources:
        raise SpecError(f"generated block {args!r}: names no spec")
    return Block(tuple(sources), metric, tuple(via))


def render_table(block: Block) -> str:
    """The Markdown table of ``block``: one row per system, one column per language, the expected ``metric``
    to 4 decimals (``—`` where a spec has no value). Rows from several specs say which spec in brackets."""
    specs: list[tuple[RegressionSpec, tuple[str, ...]]] = []
    for source in block.sources:
        spec = load_spec(source.spec, check_data=False)
        unknown = [s for s in source.systems
                   if not any(block.system_for(s, lang) in spec.systems for lang in spec.languages)]
        if unknown:
            raise SpecError(f"{spec.path}: generated block asks for {unknown}, not in systems "
                            f"({', '.join(spec.systems)})")
        if block.metric not in spec.metrics:
            raise SpecError(f"{spec.path}: generated block asks for metric {block.metric!r}, not in "
                            f"{list(spec.metrics)}")
        specs.append((spec, source.systems or tuple(spec.systems)))
    languages = list(dict.fromkeys(lang for spec, _ in specs for lang in spec.languages))
    several = len(specs) > 1
    lines = ["| system | " + " | ".join(languages) + " |", "| --- |" + " --- |" * len(languages)]
    for spec, systems in specs:
        for system in systems:
            cells = []
            for lang in languages:
                expected = spec.expected_for(lang, block.system_for(system, lang))
                value = expected.scores.get(block.metric) if expected else None
                cells.append("—" if value is None else f"{value:.4f}")
            label = f"{system} ({spec.name})" if several else system
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_page(text: str) -> str:
    """``text`` with the body of every generated block replaced by its table from the specs."""
    return _BLOCK.sub(lambda m: m[1] + render_table(parse_marker(m["args"])) + m[4], text)


def stale_blocks(text: str) -> list[str]:
    """The BEGIN arguments of every block whose committed body is not what the specs give."""
    return [m["args"] for m in _BLOCK.finditer(text) if m["body"] != render_table(parse_marker(m["args"]))]


def update_page(path: str | Path) -> list[str]:
    """Rewrite ``path``'s generated blocks from the specs; the blocks that changed (empty: the file is untouched).

    Raises:
        SpecError: a page without generated blocks, or a block naming an unknown spec, system or metric.
    """
    from clir_eval.io import atomic_write

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror})") from None
    if not _BLOCK.search(text):
        raise SpecError(f"{path}: no <!-- BEGIN GENERATED: ... --> ... <!-- END GENERATED --> block")
    changed = stale_blocks(text)
    if changed:
        with atomic_write(path) as handle:
            handle.write(render_page(text))
    return changed


__all__ = ["Block", "Source", "parse_marker", "render_page", "render_table", "stale_blocks", "update_page"]
