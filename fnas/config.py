"""Service configuration: a frozen dataclass per service, filled from flags and FNAS_<SERVICE>_<FIELD>.

Precedence: explicit flags, then environment variables, then the dataclass
defaults. Each field's docstring becomes its --help text, so flags, variables
and docs cannot drift apart.

Kept instead of a settings library, measured: `fnas --help` builds the flags of
all five services and answers in 0.33 s; importing pydantic-settings alone
takes 134 ms and jsonargparse 77 ms on these machines (`python -X importtime`),
against 23 ms for this module with argparse, and both would still need this
module's glue for `fnas serve <service>` subcommands and the deploy checks of
every flag and variable (tests/deploy).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import ipaddress
import itertools
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def env_var(prefix: str, name: str) -> str:
    """FNAS_<PREFIX>_<NAME>, e.g. FNAS_TRAINER_NATS_URL."""
    return f"FNAS_{prefix.upper()}_{name.upper()}"


def parse_field(cls: type, name: str, raw: str) -> Any:
    """Parses one field's text (from the environment or a flag); ValueError names the field."""
    kind = next(str(f.type) for f in dataclasses.fields(cls) if f.name == name)
    try:
        if "None" in kind and raw.strip().lower() in ("", "none"):
            return None
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("bool"):
            if raw.strip().lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError
            return raw.strip().lower() in ("1", "true", "yes")
        if kind.startswith("Path"):
            return Path(raw)
        return raw
    except ValueError:
        raise ValueError(f"{name}: {raw!r} is not a valid {kind}") from None


def from_env(cls: type[T], prefix: str, environ: Mapping[str, str] | None = None, **overrides: Any) -> T:
    """Defaults, then FNAS_<PREFIX>_<FIELD> variables, then explicit (non-None) overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        raw = env.get(env_var(prefix, f.name))
        if raw is not None:
            values[f.name] = parse_field(cls, f.name, raw)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)


def add_flags(parser: argparse.ArgumentParser, cls: type, prefix: str) -> argparse.ArgumentParser:
    """One flag per field (--nats-url, --ack-wait-s...), default None so the environment still applies."""
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        # A bool flag alone means true (--insecure); it also takes a value (--sync false).
        switch = {"nargs": "?", "const": "true"} if str(f.type).startswith("bool") else {}
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=_flag_parser(cls, f.name),
            default=None,
            help=f"{docs.get(f.name, '')} (env {env_var(prefix, f.name)}, default {f.default!r})",
            **switch,
        )
    return parser


def from_args(cls: type[T], prefix: str, args: argparse.Namespace) -> T:
    """The effective config: flags, then environment, then defaults."""
    names = {f.name for f in dataclasses.fields(cls)}
    return from_env(cls, prefix, **{k: v for k, v in vars(args).items() if k in names})


def _flag_parser(cls: type, name: str):
    def parse(raw: str):
        try:
            return parse_field(cls, name, raw)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = name  # argparse names the type in its error message
    return parse


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass and its dataclass bases (the --help text of its flag)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a subclass's docstring wins over its base's
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(inspect.getsource(klass))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in itertools.pairwise(body):
            named = isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            if named and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                docs[node.target.id] = str(nxt.value.value).strip()
    return docs


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1), bracketed or not."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: JetStream's limit on a stream's replicas (num_replicas).
MAX_STREAM_REPLICAS = 5


def check_stream_replicas(replicas: int, name: str = "replicas") -> None:
    """ValueError unless `replicas` is an int in 1..MAX_STREAM_REPLICAS; the message names `name`."""
    if type(replicas) is not int or not 1 <= replicas <= MAX_STREAM_REPLICAS:  # bool is not a count
        raise ValueError(
            f"{name} must be an int in 1..{MAX_STREAM_REPLICAS} (JetStream's limit on a stream's replicas), "
            f"got {replicas!r}"
        )


class FieldError(ValueError):
    """A config field outside its valid range; str() is '<field> <reason>'."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}")
        self.field = field
        self.reason = reason


#: Field name -> (whether a value is valid, the reason given when it is not).
Ranges = Mapping[str, tuple[Callable[[Any], bool], str]]


def check_ranges(cfg: Any, ranges: Ranges) -> None:
    """FieldError for the first field of `cfg` outside its range in `ranges`."""
    for name, (ok, reason) in ranges.items():
        value = getattr(cfg, name)
        if not ok(value):
            raise FieldError(name, f"{reason}, got {value!r}")


def set_fields(message: Any, cls: type) -> dict[str, Any]:
    """The fields set in a proto `message` that the dataclass `cls` also has, by name."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {f.name: value for f, value in message.ListFields() if f.name in names}


#: Field names that hold secrets: redacted in logs (a path to a secret, *_file, is not one).
_SECRET = re.compile(r"(password|token|secret)s?$")


def redacted(cfg: Any) -> dict[str, str]:
    """A config's fields as text for the start-up log line, with secrets masked.

    Secret fields (`*password`, `*token(s)`, `*secret`) show '***' when set, and
    credentials inside URLs (nats://user:pass@host) are masked too.
    """
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if _SECRET.search(f.name) and value:
            out[f.name] = "***"
        else:
            out[f.name] = redact_url(str(value))
    return out


def redact_url(text: str) -> str:
    """`text` with the credentials of any URL in it masked: nats://user:***@host, tls://***@host (a token)."""

    def mask(m: re.Match[str]) -> str:
        user, password = m.group(1), m.group(2)
        return f"//{user}:***@" if password is not None else "//***@"

    return re.sub(r"//([^/@\s:]*)(?::([^/@\s]*))?@", mask, text)


@dataclass(frozen=True)
class TransportSecurity:
    """TLS for gRPC and credentials for NATS: a base of every service config (all optional)."""

    tls_cert: Path | None = None
    """PEM certificate: the gRPC server's, and the client certificate its calls present (mTLS)."""
    tls_key: Path | None = None
    """PEM private key of tls_cert."""
    tls_client_ca: Path | None = None
    """PEM CA bundle; set, the gRPC server requires client certificates it signed (mTLS)."""
    tls_ca: Path | None = None
    """PEM CA bundle trusted for the gRPC servers this service calls; set, those calls use TLS."""
    nats_user: str = ""
    """NATS user name; empty: connect without credentials."""
    nats_password: str = ""
    """NATS password (prefer the environment variable to a flag; never logged)."""
    service_token: str = ""
    """The mesh's shared secret: the critic, buffer and pool require it as a bearer token, every service
    sends it to them (use the environment variable; never logged)."""
    insecure: bool = False
    """Listen or connect beyond loopback without a service identity or NATS credentials (trusted networks)."""

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key: set both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca: needs tls_cert and tls_key (mTLS is on top of TLS)")
        if self.nats_password and not self.nats_user:
            raise ValueError("nats_password: needs nats_user")
        if self.service_token:
            from fnas.auth import check_token  # here: config is imported where gRPC is not needed

            check_token(self.service_token, "service_token:")
        if not self.insecure:
            self._check_exposure()

    def _check_exposure(self) -> None:
        """ValueError when the service would listen or connect beyond loopback with nobody's identity.

        A gRPC bind or a call to another service beyond loopback needs the
        service identity (service_token, or mTLS: tls_client_ca); NATS beyond
        loopback, or from a service that listens beyond it, needs credentials
        (nats_user, or credentials in the URL). `insecure` lifts both.
        """
        identity = bool(self.service_token) or self.tls_client_ca is not None
        host = getattr(self, "host", "127.0.0.1")
        if not identity and not is_loopback(host):
            raise ValueError(
                f"host: {host} accepts calls from other hosts; set service_token (or mTLS: tls_client_ca) "
                "so that only the mesh may call, or insecure on a trusted network"
            )
        for name in ("critic_address", "buffer_address", "pool_address"):
            address = getattr(self, name, "")
            if address and not identity and not is_loopback(address.rpartition(":")[0]):
                raise ValueError(
                    f"{name}: {address} is beyond loopback, where the service requires the mesh's identity; "
                    "set service_token (or mTLS), or insecure on a trusted network"
                )
        nats_url = getattr(self, "nats_url", "")
        if not nats_url or self.nats_user or "@" in urllib.parse.urlsplit(nats_url).netloc:
            return
        if not is_loopback(urllib.parse.urlsplit(nats_url).hostname or "") or not is_loopback(host):
            raise ValueError(
                "nats_url: NATS beyond loopback needs credentials (nats_user and nats_password, or a "
                "token in the URL), or insecure on a trusted network"
            )

    def service_auth(self, services: list[str]) -> list[Any]:
        """Server interceptors requiring service_token on `services` (full names); none without a token."""
        from fnas import auth

        if not self.service_token:
            return []
        return [auth.BearerAuth(auth.TokenTable({self.service_token: auth.SERVICE_TENANT}), services)]

    def server_tls(self) -> dict[str, Path | None]:
        """The TLS fields of fnas.serving.ServerConfig."""
        return {"tls_cert": self.tls_cert, "tls_key": self.tls_key, "tls_client_ca": self.tls_client_ca}

    def client_tls(self) -> Any:
        """fnas.tls.ClientTLS for this service's outgoing calls; None (plaintext) without tls_ca."""
        from fnas.tls import ClientTLS

        if self.tls_ca is None:
            return None
        return ClientTLS(ca=self.tls_ca, cert=self.tls_cert, key=self.tls_key)

    def nats_auth(self) -> dict[str, str]:
        """Keyword arguments of fnas.queue.connect: user and password when set."""
        return {"user": self.nats_user, "password": self.nats_password} if self.nats_user else {}


@dataclass(frozen=True)
class JetStreamClient(TransportSecurity):
    """A base of the configs of the services that create the JetStream streams."""

    stream_replicas: int = 1
    """Replicas of the streams JOBS and EVENTS, 1..5 (at most the NATS servers); the same in every service."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_stream_replicas(self.stream_replicas, "stream_replicas")
