"""Credentials in URLs (an Optuna storage, an MLflow tracking URI, a Ray address): shown, logged and
saved with the password masked, never in the clear."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from bench.core.errors import UserError

MASK = "***"
SECRET_KEYS = ("password", "passwd", "pwd", "secret", "token", "api_key", "apikey", "access_key")


def masked(url: str) -> str:
    """``url`` with the password of its user info and the values of credential query parameters
    (``password=``, ``token=``, ...) replaced by ``***``; any other text as it is."""
    if not isinstance(url, str) or "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    userinfo = parts.netloc.rpartition("@")[0]
    if ":" in userinfo:
        url = url.replace(f"{userinfo}@", f"{userinfo.partition(':')[0]}:{MASK}@", 1)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if any(_is_secret(key) for key, _ in pairs):
        query = urlencode([(key, MASK if _is_secret(key) else value) for key, value in pairs], safe="*")
        url = url.replace(f"?{parts.query}", f"?{query}", 1)
    return url


def secrets_of(url: str) -> list[str]:
    """The credentials ``url`` holds, as written and decoded (what ``masked`` hides)."""
    if not isinstance(url, str) or "://" not in url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        if ":" in userinfo:
            found.append(userinfo.partition(":")[2])
    found += [value for key, value in parse_qsl(parts.query, keep_blank_values=True) if _is_secret(key)]
    return [s for secret in found if secret for s in dict.fromkeys((secret, unquote(secret)))]


def refuse_masked(url: str, where: str, how: str) -> str:
    """``url`` as it is, unless a credential in it is the mask itself (a URL copied from a saved
    config or a printed line, which never hold the password): refused, naming ``where`` (the config
    field or option) and ``how`` to give the credential again."""
    if MASK in secrets_of(url):
        raise UserError(
            f"{where}: a credential in it is {MASK}, the mask augbench shows and saves in place of one "
            f"(a run folder's config.yaml, a tuned config, a printed line); {how}"
        )
    return url


def scrubbed(text: str, *urls: str) -> str:
    """``text`` (an error message, say) with every credential of ``urls`` replaced by ``***``."""
    for url in urls:
        for secret in secrets_of(url):
            text = text.replace(secret, MASK)
    return text


def _is_secret(key: str) -> bool:
    return key.lower() in SECRET_KEYS
