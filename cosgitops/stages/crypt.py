"""crypt(3) through the system's libcrypt (libxcrypt): hashing a plain-text password the
way yip's shadow entities do (SHA-512, ``$6$``), and checking one against a hash so a
second run does not rewrite a password that is already set."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re
import secrets

_SALT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# a crypt(3) hash, or a marker that no password works ("!", "*", "!!", "!$6$...")
_HASHED = re.compile(r"^(?:!*\$[0-9a-z]+\$.*|[!*]+.*)$")


def is_hashed(password: str) -> bool:
    return bool(_HASHED.match(password))


@functools.cache
def _library() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("crypt")
    for candidate in (name, "libcrypt.so.1", "libcrypt.so.2"):
        if not candidate:
            continue
        try:
            library = ctypes.CDLL(candidate)
        except OSError:
            continue
        library.crypt.restype = ctypes.c_char_p
        library.crypt.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
        return library
    return None


def crypt(password: str, setting: str) -> str | None:
    """crypt(3), or None when libcrypt is missing or refuses the setting."""
    library = _library()
    if library is None:
        return None
    result = library.crypt(password.encode(), setting.encode())
    if not result or result.startswith(b"*"):
        return None
    return str(result.decode())


def sha512_hash(password: str) -> str:
    salt = "".join(secrets.choice(_SALT_ALPHABET) for _ in range(16))
    hashed = crypt(password, f"$6${salt}$")
    if hashed is None:
        raise OSError("libcrypt is not available to hash the password")
    return hashed


def matches(password: str, hashed: str) -> bool:
    """True when ``hashed`` is a crypt(3) hash of ``password``."""
    if not hashed.startswith("$"):
        return False
    result = crypt(password, hashed)
    return result is not None and secrets.compare_digest(result, hashed)
