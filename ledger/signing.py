"""Ed25519 signatures anyone holding the public key can check (DESIGN section 5).

`access-ledger keys create --out DIR` writes DIR/signing.key (PKCS#8 PEM, owner-only) and
DIR/signing.pub (SubjectPublicKeyInfo PEM, for auditors; `openssl pkey -pubin` reads it). With
$ACCESS_LEDGER_SIGNING_KEY naming the private key file, seals, digests and evidence manifests are
signed. A signature is {"algorithm": "Ed25519", "public_key": hex of the 32 raw bytes, "value": hex
of the 64-byte signature} over a message that names what it signs (see seal_message, the callers).

`cryptography` is imported only when a key is used, so the write path of a ledger without a signing
key pays nothing for it.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from ledger.errors import ValidationError

SIGNING_ENV = "ACCESS_LEDGER_SIGNING_KEY"
ALGORITHM = "Ed25519"
KEY_FILE, PUB_FILE = "signing.key", "signing.pub"
#: In the seal table's `mac` column a signature follows the HMAC (if any) after this marker.
SEAL_SIG_PREFIX = "ed25519:"


def create_keys(out: Path) -> tuple[Path, Path]:
    """Write a new key pair to out/signing.key (0600; the folder, when created, 0700) and out/signing.pub
    (0644: it is for auditors). Nothing is written if either file exists."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key_path, pub_path = out / KEY_FILE, out / PUB_FILE
    for path in (key_path, pub_path):
        if path.exists() or path.is_symlink():
            raise ValidationError(f"keys: {path} already exists: a key is never overwritten, choose another --out")
    if out.exists() and not out.is_dir():
        raise ValidationError(f"keys: {out} exists and is not a folder")
    if not out.parent.is_dir():
        raise ValidationError(f"keys: folder {out.parent} does not exist")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if not out.exists():
        out.mkdir(mode=0o700)
        os.chmod(out, 0o700)  # whatever the umask; a folder that existed keeps its mode (the key is 0600)
    for path, data, mode in ((key_path, private, 0o600), (pub_path, public, 0o644)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)  # whatever the umask
            os.write(fd, data)
        finally:
            os.close(fd)
    return key_path, pub_path


def configured() -> bool:
    return bool(os.environ.get(SIGNING_ENV))


def signing_key() -> Any | None:
    """The private key named by $ACCESS_LEDGER_SIGNING_KEY, or None when it is not set."""
    path = os.environ.get(SIGNING_ENV)
    return _load_private(path) if path else None


@lru_cache(maxsize=4)
def _load_private(path: str) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValidationError(f"{SIGNING_ENV}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ValidationError(
            f"{SIGNING_ENV}: {path} is not an unencrypted PEM private key (make one with `access-ledger keys create`)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValidationError(f"{SIGNING_ENV}: {path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Any:
    """An Ed25519 public key from a PEM file (signing.pub), or one clear error."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValidationError(f"public key: cannot read {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ValidationError(f"public key: {path} is not a PEM public key (signing.pub)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValidationError(f"public key: {path} is not an Ed25519 key")
    return key


def public_hex(public_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def sign(message: bytes, key: Any | None = None) -> dict[str, str] | None:
    """The signature of `message` by `key` (default: the configured key), or None without one."""
    key = key if key is not None else signing_key()
    if key is None:
        return None
    return {"algorithm": ALGORITHM, "public_key": public_hex(key.public_key()), "value": key.sign(message).hex()}


def check(message: bytes, signature: Any, public_key: Any) -> str | None:
    """None if `signature` (a dict as `sign` makes) is a valid signature of `message` by `public_key`;
    else what is wrong, in a few words."""
    from cryptography.exceptions import InvalidSignature

    if not isinstance(signature, dict) or signature.get("algorithm") != ALGORITHM:
        return "no Ed25519 signature"
    try:
        public_key.verify(bytes.fromhex(str(signature.get("value", ""))), message)
    except (InvalidSignature, ValueError):
        return "the Ed25519 signature does not match (signed data edited, or another key)"
    return None


# -- seals ------------------------------------------------------------------------------------


def seal_message(position: int, link: str) -> bytes:
    return f"access-ledger seal {position}:{link}".encode()


def seal_signature(position: int, link: str) -> str | None:
    """The text stored after the HMAC in al_seals.mac (None without a signing key)."""
    signature = sign(seal_message(position, link))
    return None if signature is None else SEAL_SIG_PREFIX + signature["value"]


def split_seal(mac: str | None) -> tuple[str | None, str | None]:
    """(HMAC hex or None, Ed25519 signature hex or None) from al_seals.mac."""
    if mac is None:
        return None, None
    hmac_hex = sig = None
    for part in mac.split(" "):
        if part.startswith(SEAL_SIG_PREFIX):
            sig = part[len(SEAL_SIG_PREFIX) :]
        elif part:
            hmac_hex = part
    return hmac_hex, sig


def join_seal(hmac_hex: str | None, sig: str | None) -> str | None:
    if sig is None:
        return hmac_hex
    return f"{hmac_hex} {sig}" if hmac_hex else sig


def check_seal(position: int, link: str, sig_hex: str | None) -> str | None:
    """With a signing key configured: what is wrong with the seal's signature (None: valid)."""
    key = signing_key()
    if key is None:
        return None
    if sig_hex is None:
        return (
            f"seal at position {position} has no Ed25519 signature, but {SIGNING_ENV} is set: the seal was "
            "stripped, or written without the key"
        )
    problem = check(seal_message(position, link), {"algorithm": ALGORITHM, "value": sig_hex}, key.public_key())
    return None if problem is None else f"seal at position {position}: {problem}"


# -- digests ----------------------------------------------------------------------------------


def digest_message(digest: dict[str, Any]) -> bytes:
    """What a digest's signature covers: its position and link (and the time and ledger they name)."""
    return (
        f"access-ledger digest {digest.get('position')}:{digest.get('link')}:{digest.get('at')}:{digest.get('ledger')}"
    ).encode()


def sign_digest(digest: dict[str, Any]) -> dict[str, Any]:
    signature = sign(digest_message(digest))
    if signature is not None:
        digest["signature"] = signature
    return digest
