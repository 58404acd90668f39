"""Decision history: who decided what, when, and why; the same table as CSV.

Every decision the review store recorded is listed newest first, including those taken
by a deadline (reviewer ``asya:deadline``), so an audit needs nothing but this page's
download.
"""

from __future__ import annotations

import streamlit as st

from ui import state
from ui.console import history_csv, history_rows


def page() -> None:
    console = state.console()
    state.reviewer()
    st.title("Decision history")
    rows = history_rows(console.history())
    if not rows:
        st.info("No decision has been taken yet.")
        return
    c1, c2 = st.columns(2)
    who = c1.multiselect("Reviewer", sorted({r["reviewer"] for r in rows}),
                         key="history-reviewer")
    what = c2.multiselect("Decision", sorted({r["decision"] for r in rows}),
                          key="history-decision")
    shown = [r for r in rows if (not who or r["reviewer"] in who)
             and (not what or r["decision"] in what)]
    st.caption(f"{len(shown)} of {len(rows)} decisions, newest first")
    st.dataframe(shown, hide_index=True, width="stretch")
    st.download_button("Download CSV", data=history_csv(shown),
                       file_name=f"review-history-{console.mesh}.csv", mime="text/csv",
                       key="history-csv")


page()
