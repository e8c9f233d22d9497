"""The one exception type for mistakes a user can fix (bad config, bad input file, bad option),
the marker of a judge call that failed, and URL / secret redaction for messages."""

from __future__ import annotations

import base64


class UserError(ValueError):
    """An error caused by user input (a `ValueError`); the CLI prints it on one line and exits 2.

    Args:
        message: What is wrong, naming the file and the field.
        fix: What to do about it (appended to the message).
    """

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message} -- {fix}" if fix else message)

    #: The CLI's exit code for this error (2: a mistake to fix).
    exit_code = 2


class StageFailed(UserError):
    """A stage that ran but failed too often to count as done (exit code 1: retry, not a typo)."""

    exit_code = 1


class CallFailure(str):
    """A judge call that produced no answer at all (server error, transport, rejected prompt).

    Per-prompt results are strings when something went wrong; this subclass marks the ones where
    the judge was never heard (as opposed to an answer without a readable verdict), so a stage
    can count them and refuse to call itself done when too many failed.
    """


_SECRET_QUERY = ("key", "token", "secret", "password", "passwd", "signature", "sig", "auth")


def redact_url(url: str) -> str:
    """`url` without credentials: no user:password part, secret-looking query values masked.

    Args:
        url: Any URL (an OpenAI-compatible base URL, a Ray address, ...).

    Returns:
        The URL safe to print, log or store.
    """
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = urlencode(
        [
            (k, "***" if any(s in k.lower() for s in _SECRET_QUERY) else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str) -> list[str]:
    """The credential parts of `url`: user, password and secret-looking query values.

    Args:
        url: Any URL.

    Returns:
        The non-empty secrets, for `scrub` (a server or library may echo its URL in a message).
    """
    from urllib.parse import parse_qsl, unquote, urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]  # scrub the whole thing
    found: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        user, _, password = userinfo.partition(":")
        for piece in (userinfo, user, password):
            found += [piece, unquote(piece)]
        # HTTP clients send userinfo as Basic auth ("user:" when there is no password), and
        # servers echo that header back.
        basic = f"{unquote(user)}:{unquote(password)}".encode()
        found.append(base64.b64encode(basic).decode())
    found += [v for k, v in parse_qsl(parts.query) if any(s in k.lower() for s in _SECRET_QUERY)]
    return [s for s in dict.fromkeys(found) if s]


def has_credentials(url: str) -> bool:
    """Whether `url` carries credentials (user:password or a secret-looking query value).

    An unparseable URL has none to find (the checks of the URL itself refuse it)."""
    return url_secrets(url) not in ([], [url])  # [url]: url_secrets' answer when unparseable


def shown_location(location: str) -> str:
    """An output location as messages and files show it: a URI without its credentials
    (`s3://KEY:SECRET@bucket/run` -> `s3://bucket/run`), a local path as it is."""
    return redact_url(location) if "://" in location else location


def scrub(text: str, *secrets: str | None) -> str:
    """`text` with every non-empty secret (and its Bearer header form) replaced by ***."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text
