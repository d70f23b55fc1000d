"""The per-job gallery, `jobs/<job_id>/index.html`. Pure: records in, files out.

A job of thousands of images must open fast, so the page itself is small: the header, the
counts and the money (the same figures as summary.json), the search and filter controls,
and a script. The items are data files beside it, `gallery/items-NNNNN.js`, CHUNK_ITEMS
items each in line order; the script loads the chunk the page on screen needs (the first
page needs the first chunk only) and all of them only when a search or a state filter asks
for every item. The cards of one page at a time (PAGE_ITEMS) are in the document, and their
thumbnails load lazily as they scroll into view.

Still a static artefact that opens from a results folder or the results bucket with no
server: the chunks are classic scripts (`<script src>`, which file:// allows where fetch
does not), each one call of a function the page defines, with JSON as the argument. Every
path is relative to index.html.

Hostile keys, prompts, metadata and reasons stay text: the chunks are JSON with `<`, `>`
and `&` escaped (so nothing in them can end a script element, were one ever inlined), the
page's own data is in a `type="application/json"` element with the same escaping, and the
script builds cards with textContent and setAttribute, never with markup. Image paths are
built from the key percent-encoded exactly as thumb_href/image_href do it.

Thumbnails are made after the images, by separate invocations or on demand
(pipeline/thumbnails.py), so a page may list a thumbnail that is not there yet, or never
will be (an image that does not decode): the card then loads the full image instead, and
when that is missing too, shows a placeholder saying so.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any, Final
from urllib.parse import quote

from bananabatch.core.intake.model import text_preview
from bananabatch.core.records import ItemRecord, JobRecord, extension_for
from bananabatch.core.states import ItemState
from bananabatch.report.gallery_assets import CSS, JS
from bananabatch.report.thumbs import THUMB_EXTENSION

GALLERY_CONTENT_TYPE: Final = "text/html; charset=utf-8"
CHUNK_CONTENT_TYPE: Final = "text/javascript; charset=utf-8"
# Items per data file and per page. A page always lies inside one chunk (CHUNK_ITEMS is a
# multiple of PAGE_ITEMS), so paging through an unfiltered job loads one chunk per step.
CHUNK_ITEMS: Final = 200
PAGE_ITEMS: Final = 100
# What a search loads is every chunk, about 300 bytes an item: 50,000 items are some 15 MB,
# still a page a browser searches in a moment. Past it the gallery lists the first lines
# and says so; results.jsonl and costs.csv always list every line.
GALLERY_LIMIT: Final = 50_000
# Set on a job's options while its candidates await a person's selection.
SELECTABLE_OPTION: Final = "twotier-selectable"
# The function every chunk calls; the page defines it.
CHUNK_CALLBACK: Final = "bananabatchGalleryChunk"

HAS_IMAGE: Final = frozenset({ItemState.SUCCEEDED, ItemState.CACHED})
PROBLEM_STATES: Final = frozenset({ItemState.BLOCKED, ItemState.FAILED, ItemState.REJECTED})

# Display order: what the user got first, then what went wrong, then what is still open.
_STATE_ORDER: Final = (
    ItemState.SUCCEEDED,
    ItemState.CACHED,
    ItemState.BLOCKED,
    ItemState.FAILED,
    ItemState.REJECTED,
    ItemState.SUBMITTED,
    ItemState.PENDING,
)
_STATE_LABEL: Final[Mapping[ItemState, str]] = {
    ItemState.SUCCEEDED: "Succeeded",
    ItemState.CACHED: "Cached",
    ItemState.BLOCKED: "Blocked",
    ItemState.FAILED: "Failed",
    ItemState.REJECTED: "Rejected",
    ItemState.SUBMITTED: "Submitted",
    ItemState.PENDING: "Pending",
}
# Shown even at zero: the user looks for these numbers on every job.
_ALWAYS_SHOWN: Final = frozenset(
    {ItemState.SUCCEEDED, ItemState.BLOCKED, ItemState.FAILED, ItemState.REJECTED}
)

# One item in a chunk, as a JSON array in this order (the script reads it by position;
# arrays instead of objects make a chunk about a third smaller).
ROW_FIELDS: Final = (
    "line",  # input line number
    "key",  # the user's key (or the one given to a line without); null: a keyless rejected line
    "state",
    "prompt",  # the prompt (its first GALLERY_PROMPT_CHARS when known, else its preview)
    "model",
    "shape",  # "16:9 · 1K"
    "ext",  # the image's extension; null: no image
    "paid",  # actual USD, null when unknown
    "estimate",  # estimated USD at batch price
    "reason",  # why it was blocked, failed or rejected
    "metadata",  # the line's metadata, as written
    "lane",
)

# The chunk's JSON is escaped beyond what JSON needs: no `<`, `>` or `&` appear literally,
# so no text in it can close or open an element wherever the JSON ends up.
_JSON_ESCAPES: Final = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


@dataclass(frozen=True)
class GalleryFile:
    """One object of the gallery, named relative to the job's results prefix."""

    name: str
    data: bytes
    content_type: str


def gallery_object_name(job_id: str) -> str:
    return f"jobs/{job_id}/index.html"


def chunk_name(index: int) -> str:
    """A data file's path relative to index.html (and to the job's results prefix)."""
    return f"gallery/items-{index:05d}.js"


def thumb_href(key: str) -> str:
    """The thumbnail's path relative to index.html."""
    return f"thumbs/{_segment(key)}.{THUMB_EXTENSION}"


def image_href(item: ItemRecord) -> str:
    """The full image's path relative to index.html: images/<key>.<ext>."""
    return f"images/{_segment(item.key)}.{_image_extension(item)}"


class GalleryBuilder:
    """Items in, in line order, as the reports stream them; the gallery's files out.

    Holds the encoded chunks only (about 300 bytes an item, at most GALLERY_LIMIT items),
    never the records.
    """

    def __init__(self, *, limit: int = GALLERY_LIMIT) -> None:
        self._limit = limit
        self._rows: list[str] = []
        self._chunks: list[bytes] = []
        self.listed = 0
        self.left_out = 0
        self._tally = dict.fromkeys(ItemState, 0)

    @property
    def truncated(self) -> bool:
        return self.left_out > 0

    def add(self, item: ItemRecord, metadata: Any = None, prompt: str | None = None) -> None:
        """List one line: an item, or a rejected line as an ItemRecord whose key is the
        one the user wrote ("" when the line had none). `prompt`: the prompt at more
        length than the item's preview, when known (it is searched and shown)."""
        if self.listed >= self._limit:
            self.left_out += 1
            return
        self.listed += 1
        self._tally[item.state] += 1
        self._rows.append(_dumps(_row(item, metadata, prompt)))
        if len(self._rows) == CHUNK_ITEMS:
            self._flush()

    def files(self, job: JobRecord) -> list[GalleryFile]:
        """The chunks, then index.html: a reader who finds the page finds its data."""
        self._flush()
        out = [
            GalleryFile(chunk_name(n), data, CHUNK_CONTENT_TYPE)
            for n, data in enumerate(self._chunks)
        ]
        # The job's own counts agree with summary.json and include lines that never became
        # items; the tally only stands in for a job that has not been counted yet.
        counts = _counts(job.counts) if any(job.counts.values()) else self._tally
        page = _page(job, counts, listed=self.listed, chunks=len(self._chunks))
        out.append(GalleryFile("index.html", page.encode(), GALLERY_CONTENT_TYPE))
        return out

    def _flush(self) -> None:
        if not self._rows:
            return
        index = len(self._chunks)
        body = ",\n".join(self._rows)
        self._chunks.append(f"{CHUNK_CALLBACK}({index},[\n{body}\n]);\n".encode())
        self._rows = []


def render_gallery(
    job: JobRecord,
    items: Iterable[ItemRecord],
    metadata: Mapping[int, Any] | None = None,
    *,
    prompts: Mapping[int, str] | None = None,
    limit: int = GALLERY_LIMIT,
) -> list[GalleryFile]:
    """The whole gallery of `items` (any order), each line's metadata and longer prompt
    by line number."""
    builder = GalleryBuilder(limit=limit)
    for item in sorted(items, key=lambda item: (item.line_no, item.key)):
        builder.add(item, (metadata or {}).get(item.line_no), (prompts or {}).get(item.line_no))
    return builder.files(job)


def rejected_line_item(job: JobRecord, rejected: Mapping[str, Any]) -> ItemRecord:
    """A line of rejected.jsonl as the gallery lists it: under the key the user wrote ("" for
    a line without one), its prompt when the line parses, else the line as written."""
    key = rejected.get("key")
    raw = str(rejected.get("input") or "")
    prompt = raw
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("prompt"), str):
        prompt = doc["prompt"]
    model = doc.get("model") if isinstance(doc, dict) else None
    return ItemRecord(
        job_id=job.job_id,
        key="" if key is None else str(key),
        line_no=int(rejected["line"]),
        state=ItemState.REJECTED,
        model=model if isinstance(model, str) else job.default_model,
        prompt_preview=text_preview(prompt),
        reason=str(rejected.get("reason") or ""),
    )


def _row(item: ItemRecord, metadata: Any, prompt: str | None) -> list[Any]:
    has_image = item.state in HAS_IMAGE
    shape = " · ".join(part for part in (item.aspect_ratio, item.image_size) if part)
    return [
        item.line_no,
        item.key or None,
        item.state.value,
        prompt if prompt and len(prompt) > len(item.prompt_preview) else item.prompt_preview,
        item.model,
        shape,
        _image_extension(item) if has_image else None,
        item.actual_usd,
        item.estimated_usd,
        _reason(item) or None,
        metadata if metadata not in (None, {}, [], "") else None,
        item.lane,
    ]


def _reason(item: ItemRecord) -> str:
    parts = [item.reason] if item.reason else []
    if item.finish_reason and item.finish_reason != item.reason:
        parts.append(item.finish_reason)
    if item.error_code is not None:
        parts.append(f"code {item.error_code}")
    return " · ".join(parts)


def _dumps(value: Any) -> str:
    # ensure_ascii: also no U+2028/U+2029, which older engines took for line ends.
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).translate(_JSON_ESCAPES)


def _page(job: JobRecord, counts: Mapping[ItemState, int], *, listed: int, chunks: int) -> str:
    config = {
        "items": listed,
        "chunks": chunks,
        "chunkItems": CHUNK_ITEMS,
        "pageItems": PAGE_ITEMS,
        "callback": CHUNK_CALLBACK,
        "chunkPrefix": "gallery/items-",
        "thumbExtension": THUMB_EXTENSION,
        "fields": ROW_FIELDS,
        "states": {state.value: _STATE_LABEL[state] for state in _STATE_ORDER},
        # A two-tier job in manual selection: each image can be ticked and the selection
        # downloaded for `bananabatch select` (pipeline/twotier).
        "select": job.options.get(SELECTABLE_OPTION) == "1",
        "jobId": job.job_id,
    }
    lines = max(job.line_count, sum(counts.values()))
    note = ""
    if listed < lines:
        note = (
            f'<p class="note" id="limit-note">This gallery lists the first {listed:,} of '
            f"{lines:,} lines. <code>results.jsonl</code> and <code>costs.csv</code> list "
            "every line.</p>\n"
        )
    return "".join(
        [
            '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
            '<meta name="color-scheme" content="light dark">\n',
            '<meta name="generator" content="bananabatch">\n',
            f"<title>{_e(job.job_id)} · bananabatch</title>\n",
            f"<style>{CSS}</style>\n</head>\n<body>\n",
            _header(job),
            _totals(job, counts),
            "<main>\n",
            note,
            _controls(counts, listed),
            '<section class="sheet" aria-label="Items">\n',
            '<p class="status" id="status" role="status" aria-live="polite"></p>\n',
            '<div class="grid" id="grid" aria-busy="true"></div>\n',
            '<nav class="pager" id="pager" aria-label="Pages"></nav>\n',
            '<noscript><p class="note">The items are listed by this page\'s script; '
            "<code>results.jsonl</code> and <code>costs.csv</code> beside this page list "
            "every line without it.</p></noscript>\n",
            "</section>\n</main>\n",
            _footer(job),
            '<script type="application/json" id="gallery-config">',
            _dumps(config),
            "</script>\n",
            f"<script>{JS}</script>\n",
            "</body>\n</html>\n",
        ]
    )


def _header(job: JobRecord) -> str:
    state = job.state.value
    facts = [
        f"<span>source <code>{_e(job.source.uri)}</code></span>",
        f"<span>created {_e(_when(job.created_at))}</span>",
    ]
    if job.finished_at is not None:
        facts.append(f"<span>finished {_e(_when(job.finished_at))}</span>")
    facts.append(f"<span>default model <code>{_e(job.default_model)}</code></span>")
    alert = f'<p class="alert">{_e(job.error)}</p>\n' if job.error else ""
    return (
        '<header class="top">\n<div class="brand"><span class="logo"></span>bananabatch</div>\n'
        f'<h1><span class="job-id">{_e(job.job_id)}</span> '
        f'<span class="badge job-{_e(state)}">{_e(state)}</span></h1>\n'
        f'<p class="facts">{"".join(facts)}</p>\n{alert}</header>\n'
    )


def _totals(job: JobRecord, counts: Mapping[ItemState, int]) -> str:
    total = sum(counts.values())
    lines = max(job.line_count, total)
    segments: list[str] = []
    tiles: list[str] = [
        f'<div class="tile"><dt>Lines</dt><dd>{lines:,}</dd></div>',
    ]
    for state in _STATE_ORDER:
        count = counts.get(state, 0)
        if count and total:
            share = 100.0 * count / total
            segments.append(
                f'<span class="seg s-{state.value}" style="width:{share:.3f}%" '
                f'title="{_STATE_LABEL[state]}: {count:,}"></span>'
            )
        if count or state in _ALWAYS_SHOWN:
            # Each count is a link to the cards in that state.
            tiles.append(
                f'<div class="tile"><dt><a href="#state={state.value}">'
                f'<i class="dot s-{state.value}"></i>{_STATE_LABEL[state]}</a></dt>'
                f"<dd>{count:,}</dd></div>"
            )
    return (
        '<section class="totals" aria-label="Totals">\n'
        f'<div class="bar" role="img" aria-label="items by status">{"".join(segments)}</div>\n'
        f'<dl class="tiles counts">{"".join(tiles)}</dl>\n'
        f"{_money(job, counts)}</section>\n"
    )


def _money(job: JobRecord, counts: Mapping[ItemState, int]) -> str:
    """The job's costs, each tile labelled as what it is and marked with the summary.json
    field it shows (data-field), so the page and the file cannot say different things."""
    costs = job.costs
    delivered = counts.get(ItemState.SUCCEEDED, 0) + counts.get(ItemState.CACHED, 0)
    # finalize claims a saving only for the share of the work that was done: the share
    # shown is of what the delivered images would have cost at standard price.
    saved_label = "Saved against standard price, on delivered images"
    delivered_standard = costs.saved_usd + costs.actual_usd
    if costs.saved_usd > 0 and delivered_standard > 0:
        share = 100.0 * costs.saved_usd / delivered_standard
        saved_label += f" <small>{share:.0f}%</small>"
    tiles = [
        ("estimated_usd", "Estimate at batch price", format_usd(costs.estimated_usd), ""),
        (
            "standard_equivalent_usd",
            "Estimate at standard price",
            format_usd(costs.standard_equivalent_usd),
            "",
        ),
        ("actual_usd", "Actual (paid)", format_usd(costs.actual_usd), " strong"),
        ("saved_usd", saved_label, format_usd(costs.saved_usd), " good" if costs.saved_usd else ""),
    ]
    if costs.cache_saved_usd:
        tiles.append(
            ("cache_saved_usd", "Saved by the cache", format_usd(costs.cache_saved_usd), " good")
        )
    if costs.urgent_actual_usd:
        tiles += [
            ("batch_actual_usd", "Actual, batch lane", format_usd(costs.batch_actual_usd), ""),
            ("urgent_actual_usd", "Actual, urgent lane", format_usd(costs.urgent_actual_usd), ""),
        ]
    tiles.append(
        (
            "cost_per_accepted_image_usd",
            "Actual per delivered image",
            format_usd(costs.cost_per_accepted_image_usd),
            "",
        )
    )
    body = "".join(
        f'<div class="tile{extra}" data-field="{field}"><dt>{label}</dt><dd>{value}</dd></div>'
        for field, label, value, extra in tiles
    )
    note = ""
    if not delivered and job.finished_at is not None:
        note = '<p class="note">No image was delivered: nothing was saved.</p>\n'
    return f'<dl class="tiles money" aria-label="Money (USD)">{body}</dl>\n{note}'


def _controls(counts: Mapping[ItemState, int], listed: int) -> str:
    options = [f'<option value="">All states ({listed:,})</option>']
    problems = sum(counts.get(state, 0) for state in PROBLEM_STATES)
    if problems:
        options.append(
            f'<option value="problems">Blocked, failed or rejected ({problems:,})</option>'
        )
    for state in _STATE_ORDER:
        count = counts.get(state, 0)
        if count:
            options.append(
                f'<option value="{state.value}">{_STATE_LABEL[state]} ({count:,})</option>'
            )
    return (
        '<form class="controls" id="controls" role="search" autocomplete="off">\n'
        '<label class="search"><span>Search</span><input type="search" id="q" name="q" '
        'placeholder="key, prompt, metadata, reason" spellcheck="false"></label>\n'
        '<label class="filter"><span>State</span><select id="state" name="state">'
        f"{''.join(options)}</select></label>\n"
        "</form>\n"
    )


def _footer(job: JobRecord) -> str:
    links = " · ".join(
        f'<a href="{name}">{name}</a>'
        for name in ("results.jsonl", "costs.csv", "summary.json", "failed.jsonl")
    )
    return (
        f"<footer>bananabatch · job {_e(job.job_id)} · every line, beside this page: "
        f"{links}</footer>\n"
    )


def _counts(raw: Mapping[str, int]) -> dict[ItemState, int]:
    return {state: int(raw.get(state.value, 0)) for state in ItemState}


def _image_extension(item: ItemRecord) -> str:
    if item.image_uri:
        basename = item.image_uri.rsplit("/", 1)[-1]
        stem, dot, ext = basename.rpartition(".")
        if dot and stem and ext:
            return ext
    if item.mime_type:
        return extension_for(item.mime_type)
    return "png"


def _segment(key: str) -> str:
    # Keys are object-name safe but may still hold characters a URL path treats specially.
    # The page's script encodes the same way (encodeURIComponent, then !'()*).
    return quote(key, safe="")


def format_usd(value: float | None) -> str:
    if value is None:
        return '<span class="muted">—</span>'
    sign = "-" if value < 0 else ""
    amount = abs(value)
    # Single images cost cents: show enough digits to tell $0.0195 from $0.02.
    body = f"{amount:,.2f}" if amount >= 1 or amount == 0 else f"{amount:.4f}"
    return f"{sign}${body}"


def _when(value: datetime) -> str:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _e(text: str | None) -> str:
    return escape(text or "", quote=True)
