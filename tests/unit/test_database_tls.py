"""Database TLS verifies the server against the CA the operator gives (the RDS CA is in no system
store), or the system's authorities; it is never switched to not verifying.

A loopback TLS server with a certificate from a throwaway private CA stands in for an RDS endpoint.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from payment_outbox.adapters.db.engine import make_engine, tls_context
from payment_outbox.errors import ConfigurationError

pytestmark = pytest.mark.unit


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """(CA bundle PEM, server certificate file, server key file) for host name "localhost"."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Test RDS CA"))
        .issuer_name(_name("Test RDS CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "server.pem", folder / "server.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca.public_bytes(serialization.Encoding.PEM).decode(), cert_file, key_file


@contextmanager
def tls_server(cert_file: Path, key_file: Path) -> Iterator[int]:
    """A loopback server that completes TLS handshakes (and nothing more), on a free port."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            try:
                with server_context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def _handshake(context: ssl.SSLContext, port: int, host_name: str = "localhost") -> None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host_name) as tls,
    ):
        tls.sendall(b"x")


def test_a_database_certificate_from_the_given_ca_bundle_is_verified(
    private_ca: tuple[str, Path, Path],
) -> None:
    ca_pem, cert_file, key_file = private_ca
    with tls_server(cert_file, key_file) as port:
        # Given the operator's CA bundle, when a connection's handshake runs, then it verifies
        _handshake(tls_context(ca_pem), port)


def test_without_the_bundle_a_private_ca_is_refused_never_trusted_blindly(
    private_ca: tuple[str, Path, Path],
) -> None:
    _, cert_file, key_file = private_ca
    with tls_server(cert_file, key_file) as port, pytest.raises(ssl.SSLCertVerificationError):
        # Given no bundle (the system store, which lacks the RDS CA), the handshake is refused
        _handshake(tls_context(None), port)


def test_a_certificate_for_another_host_is_refused(private_ca: tuple[str, Path, Path]) -> None:
    ca_pem, cert_file, key_file = private_ca
    with tls_server(cert_file, key_file) as port, pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tls_context(ca_pem), port, host_name="db.example.internal")


def test_a_bundle_that_is_not_pem_or_tls_off_with_a_bundle_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="not a PEM"):
        tls_context("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigurationError, match="TLS is off"):
        make_engine("mysql+pymysql://db.example.internal/app", tls=False, ca_bundle="pem")


def test_the_deployed_engine_verifies_against_the_bundle_from_its_secret(
    monkeypatch: pytest.MonkeyPatch, private_ca: tuple[str, Path, Path]
) -> None:
    from moto import mock_aws

    import payment_outbox.adapters.db.database as database
    from payment_outbox.adapters.aws import AwsClients
    from payment_outbox.composition.database import connect_database
    from payment_outbox.settings import DatabaseSettings

    ca_pem = private_ca[0]
    built: dict[str, Any] = {}

    def capture(url: str, credentials: Any = None, **kwargs: Any) -> Any:
        built.update(kwargs, url=url)
        return make_engine(url, credentials, **kwargs)

    with mock_aws():
        secrets = boto3.client("secretsmanager", region_name="us-east-1")
        credentials = '{"username": "app", "password": "pw"}'
        db_secret = secrets.create_secret(Name="db", SecretString=credentials)["ARN"]
        ca_secret = secrets.create_secret(Name="db-ca", SecretString=ca_pem)["ARN"]
        # Given a function configured as the template configures it for an RDS endpoint
        for name, value in {
            "DB_HOST": "db.example.internal",
            "DB_NAME": "app",
            "DB_SECRET_ARN": db_secret,
            "DB_TLS": "true",
            "DB_TLS_CA_SECRET_ARN": ca_secret,
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("DATABASE_URL", raising=False)
        monkeypatch.setattr(database, "make_engine", capture)
        # When the composition root connects its database
        connect_database(DatabaseSettings(), AwsClients()).engine.dispose()
    # Then TLS is on and verifies against the bundle read from the secret
    assert built["tls"] is True and built["ca_bundle"] == ca_pem
