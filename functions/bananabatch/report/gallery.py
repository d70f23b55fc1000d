"""The per-job contact sheet, `jobs/<job_id>/index.html`. Pure: records in, HTML out.

One self-contained document (inline CSS, no external resources) that refers to
thumbnails and images by paths relative to itself, so the same file works opened from a
local results folder and served from the results bucket.

The only script is one inline `onerror` attribute per thumbnail: thumbnails are made
after the images, by separate invocations (pipeline/thumbnails.py), so a page written when
the job finishes may list thumbnails that are not there yet, or never will be (an image
that does not decode); the card then loads the full image instead. The page carries no
Content-Security-Policy and the results bucket serves none, so the handler runs; under a
policy that forbade inline handlers the card would show a broken thumbnail, no worse than
without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from html import escape
from typing import Final
from urllib.parse import quote

from bananabatch.core.records import ItemRecord, JobRecord, extension_for
from bananabatch.core.states import ItemState
from bananabatch.report.thumbs import THUMB_EXTENSION

GALLERY_CONTENT_TYPE: Final = "text/html; charset=utf-8"

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


# A missing thumbnail shows the full image. Removing the handler first means a full image
# that fails too stays broken instead of retrying forever. No quotes inside, so it sits in
# a double-quoted attribute as it is; the image's path comes from data-full, escaped there.
_FALLBACK: Final = "this.onerror=null;this.src=this.dataset.full"


def gallery_object_name(job_id: str) -> str:
    return f"jobs/{job_id}/index.html"


def thumb_href(key: str) -> str:
    """The thumbnail's path relative to index.html."""
    return f"thumbs/{_segment(key)}.{THUMB_EXTENSION}"


def image_href(item: ItemRecord) -> str:
    """The full image's path relative to index.html: images/<key>.<ext>."""
    return f"images/{_segment(item.key)}.{_image_extension(item)}"


def render_gallery(job: JobRecord, items: Iterable[ItemRecord]) -> str:
    ordered = sorted(items, key=lambda item: (item.line_no, item.key))
    tally = dict.fromkeys(ItemState, 0)
    cards: list[str] = []
    problems: list[str] = []
    for item in ordered:
        tally[item.state] += 1
        cards.append(_card(item))
        if item.state in PROBLEM_STATES:
            problems.append(_problem_row(item))

    # The job's own counts agree with summary.json and include lines that never became
    # items; the tally only stands in for a job that has not been counted yet.
    counts = _counts(job.counts) if any(job.counts.values()) else tally

    parts: list[str] = [
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
        '<meta name="color-scheme" content="light dark">\n',
        '<meta name="generator" content="bananabatch">\n',
        f"<title>{_e(job.job_id)} · bananabatch</title>\n",
        f"<style>{_CSS}</style>\n</head>\n<body>\n",
        _header(job),
        _totals(job, counts),
        '<main>\n<section class="sheet" aria-label="Items">\n',
        f'<h2>Items <span class="muted">{len(ordered):,}</span></h2>\n',
        '<div class="grid">\n',
        *cards,
        "</div>\n</section>\n",
    ]
    if not ordered:
        parts.append('<p class="empty-note">This job has no items.</p>\n')
    if problems:
        parts += [
            '<section class="problems" id="problems" aria-label="Problems">\n',
            "<h2>Blocked, failed and rejected ",
            f'<span class="muted">{len(problems):,}</span></h2>\n',
            "<table>\n<thead><tr><th>Line</th><th>Key</th><th>Status</th><th>Reason</th>"
            "</tr></thead>\n<tbody>\n",
            *problems,
            "</tbody>\n</table>\n</section>\n",
        ]
    parts.append(
        f"</main>\n<footer>bananabatch · job {_e(job.job_id)} · "
        f"results.jsonl and summary.json sit next to this page</footer>\n</body>\n</html>\n"
    )
    return "".join(parts)


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
            tiles.append(
                f'<div class="tile"><dt><i class="dot s-{state.value}"></i>'
                f"{_STATE_LABEL[state]}</dt><dd>{count:,}</dd></div>"
            )

    costs = job.costs
    # The saving is on the images delivered (finalize): its share is of what they would
    # have cost at standard price, not of the whole file's standard price.
    saved_label = "Saved on delivered"
    delivered_standard = costs.saved_usd + costs.actual_usd
    if costs.saved_usd > 0 and delivered_standard > 0:
        share = 100.0 * costs.saved_usd / delivered_standard
        saved_label += f" <small>{share:.0f}%</small>"
    money = [
        ("Estimate (batch price)", _usd(costs.estimated_usd), ""),
        ("Actual (paid)", _usd(costs.actual_usd), " strong"),
        ("Estimate at standard price", _usd(costs.standard_equivalent_usd), ""),
        (saved_label, _usd(costs.saved_usd), " good"),
        ("Per accepted image", _usd(costs.cost_per_accepted_image_usd), ""),
    ]
    money_tiles = "".join(
        f'<div class="tile{extra}"><dt>{label}</dt><dd>{value}</dd></div>'
        for label, value, extra in money
    )
    return (
        '<section class="totals" aria-label="Totals">\n'
        f'<div class="bar" role="img" aria-label="items by status">{"".join(segments)}</div>\n'
        f'<dl class="tiles counts">{"".join(tiles)}</dl>\n'
        f'<dl class="tiles money">{money_tiles}</dl>\n'
        "</section>\n"
    )


def _card(item: ItemRecord) -> str:
    state = item.state.value
    key = _e(item.key)
    if item.state in HAS_IMAGE:
        frame = (
            f'<a class="frame" href="{_e(image_href(item))}" title="open the full image">'
            f'<img src="{_e(thumb_href(item.key))}" alt="{_e(item.prompt_preview or item.key)}"'
            f' data-key="{key}" data-full="{_e(image_href(item))}" onerror="{_FALLBACK}"'
            ' loading="lazy" decoding="async"></a>'
        )
    else:
        why = _reason(item)
        frame = (
            f'<div class="frame none s-{state}"><b>{_e(_STATE_LABEL[item.state])}</b>'
            + (f"<small>{_e(why)}</small>" if why else "")
            + "</div>"
        )
    shape = " · ".join(_e(part) for part in (item.aspect_ratio, item.image_size) if part)
    prompt = _e(item.prompt_preview)
    return (
        f'<article class="card" data-state="{state}">{frame}'
        f'<div class="body"><div class="row"><code class="key" title="{key}">{key}</code>'
        f'<span class="badge s-{state}">{state}</span></div>'
        f'<p class="prompt" title="{prompt}">{prompt or "<i>no prompt</i>"}</p>'
        f'<div class="row meta"><span class="shape">{shape or "—"}</span>'
        f'<span class="cost">{_item_cost(item)}</span></div>'
        f'<div class="model" title="model">{_e(item.model)}</div></div></article>\n'
    )


def _problem_row(item: ItemRecord) -> str:
    state = item.state.value
    reason = _e(item.reason) if item.reason else '<i class="muted">no reason recorded</i>'
    if item.finish_reason and item.finish_reason != item.reason:
        reason += f' <code class="finish">{_e(item.finish_reason)}</code>'
    if item.error_code is not None:
        reason += f' <code class="finish">code {item.error_code}</code>'
    return (
        f'<tr data-key="{_e(item.key)}"><td class="num">{item.line_no}</td>'
        f"<td><code>{_e(item.key)}</code></td>"
        f'<td><span class="badge s-{state}">{state}</span></td>'
        f"<td>{reason}</td></tr>\n"
    )


def _reason(item: ItemRecord) -> str:
    return item.reason or item.finish_reason or ""


def _item_cost(item: ItemRecord) -> str:
    if item.actual_usd is not None:
        return _usd(item.actual_usd)
    if item.estimated_usd:
        return f'<span class="muted" title="estimated">est. {_usd(item.estimated_usd)}</span>'
    return '<span class="muted">—</span>'


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
    return quote(key, safe="")


def _usd(value: float | None) -> str:
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


_CSS: Final = """
:root{--bg:#f6f7f9;--panel:#fff;--ink:#1f2328;--muted:#656d76;--line:#d8dee4;
--frame:#eef0f3;--ok:#1a7f37;--cached:#0969da;--blocked:#9a6700;--failed:#cf222e;
--rejected:#6e7781;--open:#8250df;--accent:#f5c518;--shadow:0 1px 2px rgba(31,35,40,.06),
0 4px 12px rgba(31,35,40,.06)}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--panel:#161b22;--ink:#e6edf3;
--muted:#8d96a0;--line:#30363d;--frame:#0b0f14;--ok:#3fb950;--cached:#4493f8;
--blocked:#d29922;--failed:#f85149;--rejected:#8d96a0;--open:#ab7df8;--shadow:none}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
code{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace}
.muted{color:var(--muted);font-weight:400}
header.top,.totals,main,footer{max-width:1400px;margin:0 auto;padding:0 24px}
header.top{padding-top:28px}
.brand{display:flex;align-items:center;gap:8px;color:var(--muted);font-weight:600;
letter-spacing:.02em;text-transform:lowercase}
.logo{width:14px;height:14px;border-radius:50% 50% 50% 0;background:var(--accent);
transform:rotate(-45deg);box-shadow:inset -3px 0 0 rgba(0,0,0,.12)}
h1{margin:6px 0 8px;font-size:26px;line-height:1.2;display:flex;flex-wrap:wrap;
align-items:center;gap:12px;word-break:break-all}
h2{font-size:17px;margin:32px 0 12px}
.facts{margin:0;color:var(--muted);display:flex;flex-wrap:wrap;gap:6px 20px}
.alert{margin:14px 0 0;padding:10px 14px;border-radius:8px;border:1px solid var(--failed);
color:var(--failed);background:color-mix(in srgb,var(--failed) 8%,var(--panel))}
.totals{margin-top:22px}
.bar{display:flex;height:10px;border-radius:5px;overflow:hidden;background:var(--line)}
.seg{display:block;height:100%}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;
margin:14px 0 0}
.tile{background:var(--panel);border:1px solid var(--line);border-radius:10px;
padding:10px 14px;box-shadow:var(--shadow)}
.tile dt{color:var(--muted);font-size:12px;display:flex;align-items:center;gap:6px}
.tile dd{margin:2px 0 0;font-size:22px;font-weight:650;font-variant-numeric:tabular-nums}
.tile dt small{font-size:11px;font-weight:700;color:var(--ok);
background:color-mix(in srgb,var(--ok) 12%,transparent);padding:0 6px;border-radius:999px}
.tile.strong{box-shadow:inset 3px 0 0 var(--accent),var(--shadow)}
.tile.good dd{color:var(--ok)}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:16px}
.card{background:var(--panel);border:1px solid var(--line);border-radius:12px;
overflow:hidden;display:flex;flex-direction:column;box-shadow:var(--shadow)}
.frame{display:flex;align-items:center;justify-content:center;aspect-ratio:1/1;
background:var(--frame);overflow:hidden}
.frame img{width:100%;height:100%;object-fit:contain;display:block}
a.frame:hover img{transform:scale(1.02);transition:transform .15s}
.frame.none{flex-direction:column;gap:6px;padding:16px;text-align:center;
background:repeating-linear-gradient(135deg,var(--frame) 0 10px,var(--panel) 10px 20px)}
.frame.none b{font-size:15px;letter-spacing:.04em;text-transform:uppercase}
.frame.none small{color:var(--muted);display:-webkit-box;-webkit-line-clamp:4;
-webkit-box-orient:vertical;overflow:hidden;word-break:break-word}
.frame.s-BLOCKED b{color:var(--blocked)}.frame.s-FAILED b{color:var(--failed)}
.frame.s-REJECTED b{color:var(--rejected)}.frame.s-PENDING b,.frame.s-SUBMITTED b{color:var(--open)}
.body{padding:10px 12px 12px;display:flex;flex-direction:column;gap:6px;flex:1}
.row{display:flex;align-items:center;justify-content:space-between;gap:8px;min-width:0}
.key{overflow:hidden;text-overflow:ellipsis;white-space:nowrap;font-weight:600}
.prompt{margin:0;color:var(--ink);display:-webkit-box;-webkit-line-clamp:3;
-webkit-box-orient:vertical;overflow:hidden;word-break:break-word;flex:1}
.meta{color:var(--muted);font-size:12px}
.model{color:var(--muted);font:11px/1.3 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.shape{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.cost{font-variant-numeric:tabular-nums;white-space:nowrap}
.badge{display:inline-block;padding:1px 8px;border-radius:999px;font-size:11px;
font-weight:700;letter-spacing:.03em;white-space:nowrap;color:#fff;background:var(--rejected)}
h1 .badge{font-size:13px;padding:3px 10px}
.s-SUCCEEDED{background:var(--ok)}.s-CACHED{background:var(--cached)}
.s-BLOCKED{background:var(--blocked)}.s-FAILED{background:var(--failed)}
.s-REJECTED{background:var(--rejected)}.s-PENDING,.s-SUBMITTED{background:var(--open)}
.job-SUCCEEDED{background:var(--ok)}.job-PARTIAL{background:var(--blocked)}
.job-FAILED{background:var(--failed)}.job-CANCELLED{background:var(--rejected)}
.job-HELD,.job-RUNNING,.job-RECEIVED{background:var(--open)}
table{width:100%;border-collapse:collapse;background:var(--panel);border:1px solid var(--line);
border-radius:10px;overflow:hidden;box-shadow:var(--shadow)}
th,td{padding:8px 12px;text-align:left;vertical-align:top;border-bottom:1px solid var(--line)}
th{font-size:12px;color:var(--muted);font-weight:600;background:var(--frame)}
tr:last-child td{border-bottom:0}
td.num{font-variant-numeric:tabular-nums;color:var(--muted);width:1%}
td:nth-child(2){width:1%;white-space:nowrap}td:nth-child(3){width:1%}
.finish{color:var(--muted)}
.empty-note{color:var(--muted)}
footer{color:var(--muted);font-size:12px;padding-top:28px;padding-bottom:32px}
"""
