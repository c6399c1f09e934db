"""Passwords and session tokens.

- Passwords are hashed with scrypt (memory-hard, in the standard library) and a random salt
  per hash, in a self-describing string ``scrypt$n$r$p$salt$hash`` so the cost can be raised
  later without breaking stored hashes. Checking a login for an unknown email still runs one
  hash, so response time does not reveal which emails have accounts.
- A session token is 32 random bytes (URL-safe base64) handed to the client once; the database
  keeps only its SHA-256. A leaked ``sessions`` table therefore holds no usable token, and a
  lookup is one primary-key probe. SHA-256 without salt is enough here: the token has 256 bits
  of entropy, so there is nothing to brute-force.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_MAXMEM = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The scrypt hash of ``password`` with a fresh random salt, as one string."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=_MAXMEM
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a hash from ``hash_password``; False for a malformed one."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), maxmem=_MAXMEM
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# Checked against when the email is unknown, so both paths cost one scrypt.
_DUMMY_HASH = hash_password("not a password", salt=b"\0" * 16)


def check_login(password: str, stored: str | None) -> bool:
    """Verify ``password`` against ``stored``, spending the same time when there is none."""
    if stored is None:
        verify_password(password, _DUMMY_HASH)
        return False
    return verify_password(password, stored)


def new_token() -> str:
    """A fresh session token for the client."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    """What the database stores for ``token``: its SHA-256."""
    return hashlib.sha256(token.encode()).digest()
