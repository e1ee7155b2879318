"""TLS and mTLS for gRPC: PEM files in, grpc credentials out.

A server with a certificate and key speaks TLS; given a client CA as well, it
requires every client to present a certificate that chains to it (mTLS). A
client with a CA bundle verifies the server against it, and presents its own
certificate and key when it has them. Files are read once, at start-up; an
error names the setting and the file, never the key's content.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


def read_pem(path: Path, setting: str) -> bytes:
    """The bytes of a PEM file; ValueError '<setting>: <reason>' if unreadable or not PEM."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{setting}: cannot read {path}: {e.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{setting}: {path} is not a PEM file")
    return data


def server_credentials(cert: Path, key: Path, client_ca: Path | None = None) -> grpc.ServerCredentials:
    """TLS server credentials; with `client_ca`, clients must present a certificate it signed (mTLS)."""
    pair = (read_pem(key, "tls_key"), read_pem(cert, "tls_cert"))
    roots = read_pem(client_ca, "tls_client_ca") if client_ca is not None else None
    return grpc.ssl_server_credentials([pair], root_certificates=roots, require_client_auth=roots is not None)


@dataclass(frozen=True)
class ClientTLS:
    """How a client reaches a TLS server: the CA bundle it trusts, and its own certificate for mTLS."""

    ca: Path | None = None
    """PEM CA bundle the server's certificate must chain to; None: the system roots."""
    cert: Path | None = None
    """PEM client certificate, for servers that require one (mTLS)."""
    key: Path | None = None
    """PEM private key of `cert`."""
    server_name: str = ""
    """Expected name in the server's certificate when it differs from the target host."""

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls_cert and tls_key: set both or neither")

    def credentials(self) -> grpc.ChannelCredentials:
        """grpc channel credentials from the files."""
        return grpc.ssl_channel_credentials(
            root_certificates=read_pem(self.ca, "tls_ca") if self.ca is not None else None,
            private_key=read_pem(self.key, "tls_key") if self.key is not None else None,
            certificate_chain=read_pem(self.cert, "tls_cert") if self.cert is not None else None,
        )

    def options(self) -> list[tuple[str, str]]:
        """Channel options: the server-name override, when set."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


__all__ = ["ClientTLS", "read_pem", "server_credentials"]
