"""Keystore wallets: create, load, and one clear error per bad input."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest
from eth_account import Account

from chain.errors import WalletError
from chain.wallet import DEVNET_SCRYPT_N, create_wallet, load_wallet, read_address, resolve_password

N = DEVNET_SCRYPT_N  # same format as production, faster to unlock


def test_create_then_load_roundtrip_scrypt_v3_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    w = create_wallet(path, "s3cret", scrypt_n=N)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ks = json.loads(path.read_text())
    assert ks["version"] == 3 and ks["crypto"]["kdf"] == "scrypt"
    loaded = load_wallet(path, "s3cret")
    assert loaded == w and Account.from_key(loaded.private_key).address == w.address
    assert read_address(path) == w.address
    assert "private_key" not in repr(w) and w.private_key.hex() not in repr(w)


def test_default_scrypt_is_strong(tmp_path: Path) -> None:
    path = tmp_path / "strong.json"
    create_wallet(path, "pw")
    assert json.loads(path.read_text())["crypto"]["kdfparams"]["n"] == 2**18


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    first = create_wallet(path, "pw", scrypt_n=N)
    before = path.read_bytes()
    with pytest.raises(WalletError, match="refusing to overwrite"):
        create_wallet(path, "pw", scrypt_n=N)
    assert path.read_bytes() == before and load_wallet(path, "pw") == first


def test_wrong_password_names_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    create_wallet(path, "right", scrypt_n=N)
    with pytest.raises(WalletError, match="wrong password") as exc:
        load_wallet(path, "wrong")
    assert "\n" not in str(exc.value)


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    path.write_text("{not json")
    with pytest.raises(WalletError, match="corrupt wallet file"):
        load_wallet(path, "pw")
    path.write_text(json.dumps({"version": 3}))
    with pytest.raises(WalletError, match="not a keystore v3 file"):
        load_wallet(path, "pw")
    good = tmp_path / "good.json"
    create_wallet(good, "pw", scrypt_n=N)
    ks = json.loads(good.read_text())
    ks["crypto"]["ciphertext"] = "00" * 32
    path.write_text(json.dumps(ks))
    with pytest.raises(WalletError, match="MAC mismatch"):
        load_wallet(path, "pw")


def test_missing_file_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(WalletError, match="wallet new --out"):
        load_wallet(tmp_path / "nope.json", "pw")


def test_empty_password_refused(tmp_path: Path) -> None:
    with pytest.raises(WalletError, match="empty password"):
        create_wallet(tmp_path / "w.json", "", scrypt_n=N)


def test_resolve_password_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pw_file = tmp_path / "pw.txt"
    pw_file.write_text("from-file\n")
    monkeypatch.setenv("MEDFED_PASSWORD", "from-env")
    assert resolve_password(pw_file) == "from-file"  # only the newline is stripped
    assert resolve_password(None) == "from-env"
    monkeypatch.delenv("MEDFED_PASSWORD")
    monkeypatch.setattr("sys.stdin", io.StringIO())  # no TTY
    with pytest.raises(WalletError, match="--password-file"):
        resolve_password(None)
    with pytest.raises(WalletError, match="password file not found"):
        resolve_password(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(WalletError, match="empty"):
        resolve_password(tmp_path / "empty.txt")
    (tmp_path / "spaces.txt").write_text(" pad ded \n")
    assert resolve_password(tmp_path / "spaces.txt") == " pad ded "
