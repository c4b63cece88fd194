"""Who may use the app: an optional password shared by everyone who uses it.

Off by default (an app on a laptop needs none). Set it with the environment variable
``UNMIXER_PASSWORD`` or with ``UNMIXER_PASSWORD = "..."`` in Streamlit's secrets
(``.streamlit/secrets.toml``); then every new session (a new tab, a reload) asks for it
before any page runs, so no uploader is drawn and no file is read until it is given.
Wrong answers wait a second each. The password is compared in constant time
(:func:`hmac.compare_digest` on SHA-256 digests).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

import streamlit as st

ENV = "UNMIXER_PASSWORD"
GRANTED = "access_granted"
"""Session key: True once this session gave the password."""
WRONG_WAIT_S = 1.0


def password() -> str | None:
    """The shared password: ``$UNMIXER_PASSWORD``, else the secret of that name, else None
    (no password: everyone may use the app)."""
    value = os.environ.get(ENV)
    if not value:
        try:
            value = st.secrets.get(ENV)
        except Exception:  # noqa: BLE001 - no secrets file, or an unreadable one: no secret
            value = None
    return str(value) if value else None


def granted() -> bool:
    """Whether this session may use the app (no password is set, or it was given)."""
    return password() is None or st.session_state.get(GRANTED) is True


def _matches(given: str, expected: str) -> bool:
    digest = lambda text: hashlib.sha256(text.encode("utf-8")).digest()  # noqa: E731
    return hmac.compare_digest(digest(given), digest(expected))


def _check() -> None:
    expected = password()
    given = st.session_state.get("access_password") or ""
    st.session_state["access_password"] = ""  # never kept
    if expected is None or _matches(given, expected):
        st.session_state[GRANTED] = True
    else:
        time.sleep(WRONG_WAIT_S)
        st.session_state["access_wrong"] = int(st.session_state.get("access_wrong", 0)) + 1


def gate() -> bool:
    """True when the page may run; else draws the password form (and nothing else)."""
    if granted():
        return True
    st.title("Unmixer", anchor=False)
    column = st.columns([2, 3])[0]
    column.markdown("This Unmixer is shared on this network. Enter its password to use it.")
    with column.form("access", border=True, enter_to_submit=True):
        st.text_input("Password", type="password", key="access_password")
        st.form_submit_button("Enter", type="primary", icon=":material/lock_open:",
                              on_click=_check)
    if st.session_state.get("access_wrong"):
        column.error("Wrong password. Ask the person who runs this Unmixer for it.",
                     icon=":material/lock:")
    return False
