"""Fast tests of the participant page helpers (app_pages/ui.py), without a browser."""

from __future__ import annotations

from app_pages.ui import slider_caption


def test_slider_caption_has_no_dangling_separator():
    anchors = "50 = just guessing · 100 = completely sure"
    assert slider_caption("%", anchors, touched=True) == "in % · 50 = just guessing · 100 = completely sure"
    assert slider_caption("%", anchors, touched=False) == (
        "in % · 50 = just guessing · 100 = completely sure · not answered yet: move the slider")
    assert slider_caption(None, "", touched=True) == ""
    assert slider_caption(None, "", touched=False) == "not answered yet: move the slider"
    assert slider_caption("hours", "", touched=True) == "in hours"


def test_untouched_slider_is_collected_as_untouched():
    """A slider shows a value from the start; only a moved slider is an answer."""
    from streamlit.testing.v1 import AppTest

    def script():
        import streamlit as st

        from app_pages import ui
        from study.instruments import Item

        items = [Item(id="conf", text="How sure?", type="slider", min=50, max=100, step=1, description="d"),
                 Item(id="moved", text="Moved?", type="slider", min=0, max=10, step=1, description="d")]
        ui.render_items(items, ["conf", "moved"], "trial:1")
        st.session_state["collected"] = ui.collect(items, ["conf", "moved"], "trial:1")

    at = AppTest.from_function(script, default_timeout=30)
    at.run()
    assert not at.exception
    first = at.session_state["collected"]
    assert first["conf"].untouched and first["conf"].value is None
    assert "not answered yet" in at.caption[0].value
    at.slider(key="trial:1|moved").set_value(7).run()
    got = at.session_state["collected"]
    assert got["conf"].untouched and got["conf"].value is None
    assert not got["moved"].untouched and got["moved"].value == 7
    assert "not answered yet" not in at.caption[1].value
