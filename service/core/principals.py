"""Who is calling: bearer tokens mapped to named principals with a role.

A token entry (in ``BIOPROP_API_TOKENS``, comma-separated, or one a line in
``BIOPROP_TOKENS_FILE``, ``#`` comments allowed) is one of:

- ``name:token``: principal ``name``, role ``user``;
- ``name:role:token``: role ``user`` or ``admin``;
- ``name:role:sha256:<hex>`` or ``name:sha256:<hex>``: the token's SHA-256 in hex, so the
  secret itself need not sit in the deployment (``printf %s TOKEN | sha256sum``);
- ``token`` alone (the entries of versions before principals): principal
  ``token-<first 8 hex of its SHA-256>``, role ``admin`` (it could act on every job then,
  and still can).

A ``user`` sees and acts on its own jobs only (another's job id answers 404); an ``admin``
on all. Several entries may name one principal (a token being rotated in beside the old
one). With no entries at all the API is open and every caller is the one implicit
principal ``local`` (an admin). The file is read again when it changes, so a token is
revoked by deleting its line, without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["LOCAL", "Principal", "TokenEntry", "TokenTable", "parse_entries", "parse_entry"]

log = logging.getLogger(__name__)

Role = Literal["user", "admin"]
ROLES = ("user", "admin")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
HEX = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class Principal:
    """A caller: ``name`` (recorded as the owner of what it submits), ``role``, and the
    ``scope`` its Idempotency-Keys are kept under."""

    name: str
    role: Role
    scope: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def sees(self, owner: str | None) -> bool:
        """Whether this caller may see and act on a job owned by ``owner``."""
        return self.admin or owner == self.name


LOCAL = Principal("local", "admin", "")


@dataclass(frozen=True)
class TokenEntry:
    principal: Principal
    digest: bytes  # SHA-256 of the token


def _sha256(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_entry(entry: str) -> TokenEntry:
    """One token entry (see the module's docstring); ``ValueError`` says what is wrong,
    without repeating the secret."""
    parts = entry.strip().split(":")
    role: str = "user"
    hashed = None
    if len(parts) == 1:
        digest = _sha256(parts[0])
        return TokenEntry(
            Principal(f"token-{digest.hex()[:8]}", "admin", digest.hex()[:32]), digest
        )
    if len(parts) == 2:
        name, token = parts
    elif len(parts) == 3 and parts[1] == "sha256":
        name, _, hashed = parts
    elif len(parts) == 3:
        name, role, token = parts
    elif len(parts) == 4 and parts[2] == "sha256":
        name, role, _, hashed = parts
    else:
        raise ValueError(
            "a token entry is TOKEN, NAME:TOKEN, NAME:ROLE:TOKEN or NAME:ROLE:sha256:HEX"
        )
    if not NAME.match(name):
        raise ValueError(f"principal name {name!r} must match {NAME.pattern}")
    if role not in ROLES:
        raise ValueError(f"principal {name!r}: role {role!r} is not one of {', '.join(ROLES)}")
    if hashed is not None:
        if not HEX.match(hashed):
            raise ValueError(f"principal {name!r}: sha256: needs 64 hex digits")
        digest = bytes.fromhex(hashed)
    else:
        if not token:
            raise ValueError(f"principal {name!r}: empty token")
        digest = _sha256(token)
    return TokenEntry(Principal(name, role, name), digest)  # type: ignore[arg-type]


def parse_entries(entries: list[str], where: str) -> list[TokenEntry]:
    """Every entry parsed; one principal has one role whatever its number of tokens."""
    parsed = []
    for number, entry in enumerate(entries, 1):
        try:
            parsed.append(parse_entry(entry))
        except ValueError as exc:
            raise ValueError(f"{where}, entry {number}: {exc}") from None
    roles: dict[str, str] = {}
    for e in parsed:
        if roles.setdefault(e.principal.name, e.principal.role) != e.principal.role:
            raise ValueError(f"{where}: principal {e.principal.name!r} has two roles")
    return parsed


def read_tokens_file(path: Path) -> list[TokenEntry]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return parse_entries([line for line in lines if line], str(path))


class TokenTable:
    """The configured entries: ``BIOPROP_API_TOKENS`` plus ``BIOPROP_TOKENS_FILE`` (read
    again when its modification time or size changes; a file that no longer parses keeps
    the last good table and logs why)."""

    def __init__(self, entries: list[str], file: Path | None) -> None:
        self._fixed = parse_entries(entries, "BIOPROP_API_TOKENS")
        self._file = file
        self._stamp: tuple[int, int] | None = None
        self._from_file: list[TokenEntry] = []
        self._lock = threading.Lock()
        if file is not None:
            self._from_file = read_tokens_file(file)  # a bad file stops the start
            self._stamp = self._file_stamp()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self._file.stat()  # type: ignore[union-attr]
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def entries(self) -> list[TokenEntry]:
        if self._file is not None:
            stamp = self._file_stamp()
            if stamp != self._stamp:
                with self._lock:
                    try:
                        self._from_file = read_tokens_file(self._file) if stamp else []
                        log.info("token file %s read again", self._file)
                    except (OSError, ValueError) as exc:
                        log.error("token file %s not reloaded: %s", self._file, exc)
                    self._stamp = stamp
        return [*self._fixed, *self._from_file]

    @property
    def open(self) -> bool:
        """No token configured: the API is open, every caller :data:`LOCAL`."""
        return self._file is None and not self._fixed

    def identify(self, token: str) -> Principal | None:
        """The principal of ``token``, comparing its digest with every entry's in constant
        time (no early exit); None when none matches."""
        digest = _sha256(token)
        found = None
        for entry in self.entries():
            if hmac.compare_digest(digest, entry.digest):
                found = entry.principal
        return found
