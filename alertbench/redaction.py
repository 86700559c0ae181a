"""Secrets out of anything shown or written: URLs, messages, results.

A transport URL may carry a password (``kafka://user:pw@host/alerts`` or ``?password=``); it
reaches error messages, progress lines and results files. One place hides it, on the ground
floor, so the transports' own messages and the harness's files redact alike.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET = "***"
SECRET_KEY = re.compile(r"password|passwd|pwd|secret|token|credential|api[_-]?key", re.I)
"""Names of options, keys, query parameters and flags whose values are secrets."""

URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
"""A URL inside free text (a command line, a message), ending before space or a quote."""


def redact_url(text: str) -> str:
    """``text`` with a URL's ``user:pass@`` and secret query parameters replaced."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    if not parts.scheme or not parts.netloc:
        return text
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{SECRET}@{host}" if ":" in userinfo else f"{SECRET}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SECRET_KEY.search(k) for k, _ in pairs):
            query = urlencode(
                [(k, SECRET if SECRET_KEY.search(k) else v) for k, v in pairs], safe="*"
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (a message, a command line)."""
    return URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
