"""The review queue: one card per paused item, oldest first, with the decisions.

A card shows what a reviewer needs to decide without leaving it: the original and the
enhanced image side by side (each opens full screen; an expander shows them at full
resolution), the judge's score, verdict and reasons, where the item came from and where
each decision would send it, and the payload. Decisions run in button callbacks, so the
page that follows already shows the queue without the decided item.

One bad item must not blank the queue: an image that cannot be read or decoded becomes
a placeholder that says why, and a card whose payload breaks the page shows the error
in its place; the cards after it render. Everything a payload brings (ids, actor and
route names, reasons, URLs, errors) is shown literally, never as Markdown.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import streamlit as st

from asya_agents.errors import AsyaError
from asya_agents.review import ReviewItem
from ui import state
from ui.console import Console, Filters, judge_view, md_code, md_escape, next_hops
from ui.images import ImageRef, image_refs, read_image

PAGE_SIZE = 20
ANY = "(any)"
log = logging.getLogger("asya.console")


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _when(ts: float | None) -> str:
    if ts is None:
        return "?"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- decisions (button callbacks) -------------------------------------------------------------


def _decide(console: Console, reviewer: str, item_id: str, decision: str) -> None:
    notes = (st.session_state.get(f"notes-{item_id}") or "").strip() or None
    payload: Any = None
    if decision in ("reject", "send_back") and not notes:
        what = "a reason" if decision == "reject" else "notes for the enhancer"
        state.flash("error", f"{item_id}: write {what} first.")
        return
    if decision == "edit":
        try:
            payload = json.loads(st.session_state.get(f"edit-{item_id}") or "")
        except json.JSONDecodeError as exc:
            state.flash("error", f"{item_id}: the edited payload is not valid JSON: {exc}")
            return
    try:
        result = console.decide(item_id, decision=decision, reviewer=reviewer, notes=notes,
                                payload=payload)
    except (AsyaError, ValueError) as exc:
        _failed(console, reviewer, item_id, exc)
        return
    item = result.item
    if result.won:
        hops = next_hops(item)["approve" if decision == "edit" else decision]
        state.flash("success", f"{item_id}: {decision.replace('_', ' ')} recorded; it goes "
                               f"on to {' → '.join(hops)}.")
    else:
        state.flash("warning", f"{item_id} was already decided by {item.decided_by} "
                               f"({item.decision}, {_when(item.decided_at)}); your "
                               f"{decision.replace('_', ' ')} was not applied.")


def _failed(console: Console, reviewer: str, item_id: str, exc: Exception) -> None:
    """Say whether a decision that raised was recorded: if the store took it but the
    broker did not take the envelope, the review actor's sweep resumes it later."""
    try:
        item = console.reviews.get(item_id)
    except AsyaError:
        item = None
    if item is not None and item.status == "decided" and item.decided_by == reviewer:
        state.flash("warning", f"{item_id}: your {item.decision} is recorded, but the "
                               f"envelope could not be sent yet ({exc}); the review actor "
                               "will resume it.")
    else:
        state.flash("error", f"{item_id}: the decision was not recorded: {exc}")


# -- the page ----------------------------------------------------------------------------------

ORDERS: dict[str, Callable[[ReviewItem], Any]] = {
    "Oldest first": lambda i: (i.parked_at, i.id),
    "Newest first": lambda i: (-i.parked_at, i.id),
    "Lowest score first": lambda i: (i.score is None, i.score or 0.0, i.parked_at),
}


def counts_row(console: Console) -> None:
    counts = console.counts()
    cols = st.columns(5)
    for col, (label, key) in zip(cols, [("Pending", "pending"), ("Approved", "approve"),
                                        ("Rejected", "reject"), ("Sent back", "send_back"),
                                        ("Edited", "edit")], strict=True):
        col.metric(label, counts.get(key, 0))


def filters_row(everything: list[ReviewItem]) -> Filters:
    # Only this console's mesh is shown (meshes may share a store): no mesh filter.
    actors = sorted({i.actor for i in everything})
    c1, c2, c3 = st.columns([2, 2, 3])
    actor = c1.selectbox("Actor", [ANY, *actors], key="filter-actor")
    minutes = c2.number_input("Waiting at least (minutes)", min_value=0, value=0, step=5,
                              key="filter-age")
    low, high = c3.slider("Judge's score", 0.0, 1.0, (0.0, 1.0), step=0.05,
                          key="filter-score")
    return Filters(actor=None if actor == ANY else actor,
                   min_age=minutes * 60.0 if minutes else None,
                   min_score=low if low > 0 else None, max_score=high if high < 1 else None)


def _image(console: Console, item: ReviewItem, ref: ImageRef) -> bytes | str | None:
    """One image of a card, or a placeholder with the reason it cannot be shown (an
    unreadable URL, a refused one, bytes that do not decode): never an exception."""
    if ref.url is None:
        st.info(f"No {ref.label} image in the payload.")
        return None
    try:
        data = read_image(ref.url, storage=console.ctx.storage())
        name = ref.url.rstrip("/").rsplit("/", 1)[-1]
        st.image(data, caption=f"{ref.label} · {md_escape(name)}", width="stretch")
    except Exception as exc:  # one bad image must not take the queue with it
        log.warning("review item %s: cannot show the %s image %s: %s", item.id, ref.label,
                    ref.url, exc)
        st.warning(f"{ref.label}: cannot show {md_escape(ref.url)}: "
                   f"{md_escape(_reason(exc))}", icon=":material/broken_image:")
        return None
    return data


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, AsyaError) else f"{type(exc).__name__}: {text}"


def images(console: Console, item: ReviewItem) -> None:
    refs = image_refs(item.payload)
    cols = st.columns(2)
    loaded: list[tuple[str, bytes | str]] = []
    for col, ref in zip(cols, refs, strict=True):
        with col:
            data = _image(console, item, ref)
            if data is not None and ref.url is not None:
                loaded.append((f"{ref.label} · {ref.url}", data))
    if loaded:
        with st.expander("Full resolution"):
            for label, data in loaded:
                st.caption(md_escape(label))
                st.image(data, width="content")


def judge_and_route(item: ReviewItem) -> None:
    verdict = judge_view(item.payload)
    score = "—" if verdict.score is None else f"{verdict.score:.2f}"
    c1, c2 = st.columns(2)
    c1.metric("Judge's score", score)
    c2.metric("Verdict", md_escape(verdict.verdict or "—"))
    for reason in verdict.reasons:
        st.markdown(f"- {md_escape(reason)}")
    if verdict.defects:
        st.caption("Defects: " + md_escape(", ".join(verdict.defects)))
    route = item.envelope.get("route", {})
    hops = next_hops(item)
    st.markdown(
        f"**Came from** {_path(route.get('prev', [])) or '(start)'} → {md_code(item.actor)}"
        f"  \n**Approve** → {_path(hops['approve'])}  \n"
        f"**Send back** → {_path(hops['send_back'])}  \n"
        f"**Reject** → {_path(hops['reject'])}")


def _path(hops: Any) -> str:
    """Actor names as an arrow path, each shown literally."""
    names = hops if isinstance(hops, list) else [hops]
    return " → ".join(md_escape(str(h)) for h in names)


def decisions(console: Console, reviewer: str, item: ReviewItem) -> None:
    st.text_input("Reason or notes (needed to reject or send back)", key=f"notes-{item.id}")
    args = (console, reviewer, item.id)
    c1, c2, c3 = st.columns(3)
    c1.button("Approve", type="primary", key=f"approve-{item.id}", on_click=_decide,
              args=(*args, "approve"), width="stretch")
    c2.button("Reject", key=f"reject-{item.id}", on_click=_decide, args=(*args, "reject"),
              width="stretch")
    c3.button("Send back", key=f"send_back-{item.id}", on_click=_decide,
              args=(*args, "send_back"), width="stretch")
    with st.expander("Edit the payload, then approve"):
        st.text_area("Payload (JSON)", value=json.dumps(item.payload, indent=2),
                     key=f"edit-{item.id}", height=260)
        st.button("Save and approve", key=f"edit-approve-{item.id}", on_click=_decide,
                  args=(*args, "edit"))


def card(console: Console, reviewer: str, item: ReviewItem, now: float) -> None:
    with st.container(border=True, key=f"item-{item.id}"):
        st.markdown(f"#### {md_code(item.id)} · {md_escape(item.actor)} · waiting "
                    f"{_age(now - item.parked_at)}")
        try:
            body(console, item)
        except Exception as exc:  # a payload that breaks its card leaves the others be
            log.warning("review item %s cannot be shown: %s", item.id, exc, exc_info=True)
            st.error(f"This item cannot be shown: {md_escape(_reason(exc))}. You can "
                     "still decide on it; the payload is below.")
            st.code(json.dumps(item.payload, indent=2, default=str), language="json")
        decisions(console, reviewer, item)


def body(console: Console, item: ReviewItem) -> None:
    action = item.options.get("deadline_action", "reject")
    st.caption(f"mesh {md_escape(item.mesh)} · parked {_when(item.parked_at)}"
               + (f" · deadline {_when(item.deadline)}, then {md_escape(str(action))}"
                  if item.deadline else ""))
    left, right = st.columns([3, 2])
    with left:
        images(console, item)
    with right:
        judge_and_route(item)
        with st.expander("Payload"):
            st.json(item.payload)


def page() -> None:
    console = state.console()
    reviewer = state.reviewer()
    st.title("Review queue")
    state.show_flash()
    counts_row(console)
    everything = console.pending()
    filters = filters_row(everything)
    items = console.pending(filters)
    if not items:
        st.success("Nothing waits for review." if not everything
                   else "No pending item matches these filters.")
        st.button("Refresh", key="queue-refresh")
        return
    c1, c2, c3 = st.columns([5, 2, 1], vertical_alignment="bottom")
    order = c2.selectbox("Order", list(ORDERS), key="queue-order")
    c3.button("Refresh", key="queue-refresh", width="stretch")
    items.sort(key=ORDERS[order])
    c1.caption(f"{len(items)} pending match, {order.lower()}"
               + (f"; showing the first {PAGE_SIZE}" if len(items) > PAGE_SIZE else ""))
    now = time.time()
    for item in items[:PAGE_SIZE]:
        card(console, reviewer, item, now)


page()
