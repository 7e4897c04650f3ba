"""The server's TLS settings: both files or neither, and a file it cannot read stops it at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import ConfigError, load_settings
from tests.tls import make_tls_files

_ENV = {"BETTER_AUTH_SECRET": "x" * 48}


def test_cert_and_key_flags_load_the_pem_files(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    settings = load_settings(["--tls-cert", str(files.server_cert), "--tls-key", str(files.server_key)], _ENV)
    assert settings.tls_certificate_chain == files.server_cert.read_bytes()
    assert settings.tls_private_key is not None
    assert settings.tls_private_key.reveal() == files.server_key.read_bytes()
    assert "PRIVATE KEY" not in repr(settings)


def test_environment_variables_turn_tls_on(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    env = {**_ENV, "TODO_TLS_CERT": str(files.server_cert), "TODO_TLS_KEY": str(files.server_key)}
    assert load_settings([], env).tls_certificate_chain == files.server_cert.read_bytes()


def test_no_tls_settings_means_plaintext() -> None:
    settings = load_settings([], _ENV)
    assert (settings.tls_certificate_chain, settings.tls_private_key) == (None, None)


def test_a_cert_without_its_key_is_refused(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    with pytest.raises(ConfigError, match="both --tls-cert and --tls-key"):
        load_settings(["--tls-cert", str(files.server_cert)], _ENV)


def test_an_unreadable_key_file_is_named_in_the_error(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    missing = tmp_path / "nope.key"
    with pytest.raises(ConfigError, match=r"--tls-key .*nope\.key.* cannot be read"):
        load_settings(["--tls-cert", str(files.server_cert), "--tls-key", str(missing)], _ENV)


def test_a_file_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    with pytest.raises(ConfigError, match="not a PEM file"):
        load_settings(["--tls-cert", str(files.server_key.parent / "ca.pem"), "--tls-key", __file__], _ENV)


def test_a_client_ca_asks_callers_for_certificates(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    flags = ["--tls-cert", str(files.server_cert), "--tls-key", str(files.server_key)]
    settings = load_settings([*flags, "--tls-client-ca", str(files.ca_cert)], _ENV)
    assert settings.tls_client_ca == files.ca_cert.read_bytes()
    assert load_settings(flags, _ENV).tls_client_ca is None


def test_a_client_ca_without_tls_is_refused(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    with pytest.raises(ConfigError, match="needs TLS"):
        load_settings([], {**_ENV, "TODO_TLS_CLIENT_CA": str(files.ca_cert)})
