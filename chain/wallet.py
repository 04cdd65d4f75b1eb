"""Institution identity: one secp256k1 key in an Ethereum keystore v3 file (scrypt)."""

from __future__ import annotations

import getpass
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from eth_account import Account
from eth_utils import to_checksum_address

from chain.errors import WalletError

PASSWORD_ENV = "MEDFED_PASSWORD"
DEFAULT_SCRYPT_N = 2**18
DEVNET_SCRYPT_N = 2**14  # devnet wallets: same format, a fraction of the unlock time


@dataclass(frozen=True)
class Wallet:
    """An unlocked key. `private_key` is never shown in repr."""

    address: str
    private_key: bytes = field(repr=False)


def create_wallet(path: str | Path, password: str, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> Wallet:
    """Write a new keystore v3 (scrypt) at `path` with mode 0600; refuses to overwrite."""
    path = Path(path)
    if not password:
        raise WalletError("empty password: give a non-empty password (--password-file or MEDFED_PASSWORD)")
    if path.exists():
        raise WalletError(f"{path}: already exists, refusing to overwrite it: choose another --out path")
    account = Account.create()
    keystore = Account.encrypt(account.key, password, kdf="scrypt", iterations=scrypt_n)
    data = json.dumps(keystore, indent=1).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise WalletError(
            f"{path}: already exists, refusing to overwrite it: choose another --out path"
        ) from None
    except OSError as exc:
        raise WalletError(f"{path}: cannot create ({exc.strerror}): choose a writable --out path") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)  # O_CREAT's mode is filtered by the umask
    return Wallet(address=account.address, private_key=bytes(account.key))


def read_address(path: str | Path) -> str:
    """The address recorded in a keystore, without decrypting it."""
    keystore = _read_keystore(Path(path))
    addr = keystore.get("address")
    if not isinstance(addr, str):
        raise WalletError(f"{path}: keystore has no address field: decrypt it with load_wallet instead")
    return str(to_checksum_address("0x" + addr.removeprefix("0x")))


def load_wallet(path: str | Path, password: str) -> Wallet:
    """Decrypt the keystore at `path`; WalletError with the fix on any problem."""
    path = Path(path)
    keystore = _read_keystore(path)
    try:
        key = Account.decrypt(keystore, password)
    except ValueError as exc:
        if "MAC" in str(exc):
            raise WalletError(
                f"{path}: wrong password (MAC mismatch): use the password the wallet was created with"
            ) from None
        raise WalletError(f"{path}: not a valid keystore v3 file ({exc}): restore it from a backup") from None
    except (KeyError, TypeError) as exc:
        raise WalletError(f"{path}: corrupt keystore (missing {exc}): restore it from a backup") from None
    account = Account.from_key(key)
    return Wallet(address=account.address, private_key=bytes(key))


def _read_keystore(path: Path) -> dict[str, object]:
    if not path.exists():
        raise WalletError(
            f"{path}: no such wallet file: create one with `medfed-node wallet new --out {path}`"
        )
    try:
        keystore = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WalletError(
            f"{path}: corrupt wallet file ({type(exc).__name__}): restore it from a backup"
        ) from None
    if not isinstance(keystore, dict) or ("crypto" not in keystore and "Crypto" not in keystore):
        raise WalletError(f"{path}: not a keystore v3 file (no crypto section): restore it from a backup")
    return keystore


def resolve_password(
    password_file: str | Path | None = None,
    env: str = PASSWORD_ENV,
    prompt: bool = True,
    *,
    confirm: bool = False,
) -> str:
    """The password from `password_file`, else the `env` variable, else a TTY prompt.

    Never from argv. Only the trailing newline of a password file is stripped.
    """
    if password_file is not None:
        p = Path(password_file)
        try:
            text = p.read_text()
        except FileNotFoundError:
            raise WalletError(f"{p}: password file not found: fix --password-file") from None
        except OSError as exc:
            raise WalletError(
                f"{p}: cannot read password file ({exc.strerror}): fix --password-file"
            ) from None
        password = text.rstrip("\r\n")
        if not password:
            raise WalletError(f"{p}: password file is empty: put the password on its first line")
        return password
    value = os.environ.get(env)
    if value:
        return value
    if prompt and sys.stdin is not None and sys.stdin.isatty():
        password = getpass.getpass("Wallet password: ")
        if confirm and getpass.getpass("Repeat password: ") != password:
            raise WalletError("passwords do not match: run the command again")
        if not password:
            raise WalletError("empty password: type a non-empty password")
        return password
    raise WalletError(f"no password: pass --password-file FILE or set {env} (no TTY to prompt on)")
