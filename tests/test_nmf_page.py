"""AppTest smoke test of the NMF Lab page (app_pages/nmf_lab.py): every method, end to end."""

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

PAGE = str(Path(__file__).resolve().parents[1] / "app_pages" / "nmf_lab.py")
SR = 44100


def clip_record(seconds=3.0, seed=0):
    t = np.arange(int(seconds * SR)) / SR
    notes = 0.3 * np.where(t % 1 < 0.5, np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 587 * t))
    hits = 0.3 * np.random.default_rng(seed).standard_normal(t.size) * np.exp(-30 * ((t * 3) % 1))
    buf = io.BytesIO()
    sf.write(buf, np.stack([notes + 0.3 * hits, 0.5 * notes + hits]).T, SR, format="WAV")
    data = buf.getvalue()
    return {"name": "test.wav", "data": data, "digest": hashlib.sha1(data).hexdigest(),
            "seconds": seconds}


@pytest.fixture()
def app():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception
    assert any("Upload a clip" in e.value for e in at.info)  # empty page asks for a clip
    at.session_state["nmf_lab:clip"] = clip_record()
    at.run()
    return at


def run_method(at, method, **widgets):
    at.session_state["nmf_lab:w:method"] = method
    at.run()
    for key, value in widgets.items():
        at.number_input(key=f"nmf_lab:w:{key}").set_value(value)
    at.button(key="nmf_lab:go").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def test_nmf_with_sklearn_comparison_components_and_groups(app):
    app.slider(key="nmf_lab:w:k").set_value(3)
    at = run_method(app, "NMF", iters=15)
    assert len(at.get("plotly_chart")) == 2  # decomposition + loss curves
    assert len(at.get("audio")) == 3  # one player per component
    solvers = at.dataframe[0].value["solver"].tolist()
    assert solvers == ["ours (MU)", "scikit-learn mu"]
    at.text_input(key="nmf_lab:w:groups").input("1+2").run()
    assert not at.exception and len(at.get("audio")) == 3 + 2  # group 1+2 and the rest
    at.text_input(key="nmf_lab:w:groups").input("1+9").run()
    assert len(at.error) == 1 and "outside 1..3" in at.error[0].value  # one line, work kept
    assert len(at.get("audio")) == 3


def test_hpss_ica_and_mosaicing(app):
    at = run_method(app, "HPSS + NMF", hiters=15)
    assert len(at.get("plotly_chart")) == 2 and len(at.get("audio")) >= 3
    at = run_method(at, "FastICA")
    assert len(at.get("audio")) == 2
    at.session_state["nmf_lab:source"] = clip_record(2.5, seed=1)
    at = run_method(at, "Mosaicing", miters=5, mgl=1)
    assert len(at.get("audio")) == 1 and len(at.get("plotly_chart")) == 2


def test_long_clip_is_offered_as_a_trimmed_excerpt(app):
    app.button(key="nmf_lab:demo").click().run()  # the shipped 61 s demo song
    assert not app.exception
    assert any("excerpt" in e.value for e in app.info)
    assert app.slider(key="nmf_lab:w:start_clip").max >= 1


def test_nmfd_beside_plain_nmf_and_complex_nmf_with_both_resyntheses(app):
    at = run_method(app, "NMFD", dt=4, diters=10)  # K = 4 templates by default
    assert at.dataframe[0].value["model"].tolist() == ["NMFD (4 templates x 4 frames)",
                                                        "plain NMF (16 components)"]
    assert len(at.get("plotly_chart")) == 3 and len(at.get("audio")) == 4
    at = run_method(at, "Complex NMF", citers=5)  # K = 4 by default
    assert len(at.get("plotly_chart")) == 2 and len(at.get("audio")) == 4
    own = [a.proto.url for a in at.get("audio")]
    at.radio(key="nmf_lab:w:cphase").set_value("wiener").run()
    assert not at.exception and len(at.get("audio")) == 4
    assert [a.proto.url for a in at.get("audio")] != own  # the other resynthesis
