"""`isb pki install`: turn an issued certificate into a ready certificate folder.

After `isb pki request` (key and CSR, on the holder's side) and `isb pki issue` (on the admin's
side), the holder has its key, the certificate chain the admin sent back and the deployment's
trust anchor (`ca.crt`). This command checks that they belong together, exactly as a client will
when it connects (chain to the CA, validity, role, key pair match), lays them out as every `isb`
command expects (`<AGENCY>.crt`, `<AGENCY>.key`, `ca.crt`; `auditor.*` and `admin.*` for those
roles) and writes `isb.toml`, so that `ISB_CONFIG=DIR/isb.toml` is all a command needs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from broker.identity import Role, SpiffeId
from broker.pki import _files
from broker.protocol.certificates import CertificateProfileError, spiffe_id_of
from clients._tls import load_identity
from clients.cli.failures import CommandError
from clients.cli.output import output

__all__ = ["register"]

CONFIG_NAME = "isb.toml"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `pki install`."""
    install = commands.add_parser(
        "install", help="check an issued certificate with its key and the CA, and lay out a ready folder"
    )
    install.add_argument("certificate", type=Path, metavar="CERT", help="the certificate chain `isb pki issue` wrote")
    install.add_argument(
        "--ca-cert",
        type=Path,
        required=True,
        metavar="FILE",
        help="the deployment's trust anchor (ca.crt), from the admin",
    )
    install.add_argument(
        "--dir", type=Path, metavar="DIR", help="the folder to make ready (default: the certificate's folder)"
    )
    install.add_argument(
        "--key",
        type=Path,
        metavar="FILE",
        help="the private key `isb pki request` wrote (default: found by name in DIR)",
    )
    install.add_argument("--broker", metavar="HOST:PORT", help="broker address to record in DIR/isb.toml")
    install.set_defaults(func=_install)


def _spiffe_id(certificate: Path) -> SpiffeId:
    try:
        leaf = x509.load_pem_x509_certificates(certificate.read_bytes())[0]
    except OSError as exc:
        raise CommandError(f"cannot read {certificate}: {exc.strerror}") from exc
    except (ValueError, IndexError) as exc:
        raise CommandError(
            f"{certificate} is not a PEM certificate with a SPIFFE id ({exc})",
            "use the .crt file `isb pki issue` wrote",
        ) from exc
    try:
        return spiffe_id_of(leaf, None)
    except CertificateProfileError as exc:
        raise CommandError(f"{certificate}: {exc}", "use the .crt file `isb pki issue` wrote") from exc


def _base_name(spiffe_id: SpiffeId) -> str:
    # The names the CLI looks for: `<AGENCY>.crt` for agencies, `auditor.crt`/`admin.crt` otherwise.
    return spiffe_id.name if spiffe_id.role is Role.AGENCY else spiffe_id.role.value


def _find_key(args: argparse.Namespace, directory: Path, spiffe_id: SpiffeId) -> Path:
    if args.key is not None:
        return Path(str(args.key))
    base = _base_name(spiffe_id)
    candidates: list[Path] = [
        directory / f"{base}.key",
        directory / f"{spiffe_id.name}.key",
        args.certificate.parent / f"{spiffe_id.name}.key",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise CommandError(
        f"no private key for {spiffe_id} in {directory} (looked for {', '.join(c.name for c in candidates[:2])})",
        "pass --key with the file `isb pki request` wrote",
    )


def _place_key(key: Path, target: Path) -> None:
    if key.resolve() == target.resolve():
        return
    if target.exists():
        raise CommandError(f"{target} exists and is not {key}", "remove it, or pass --key with the right file")
    if key.parent.resolve() == target.parent.resolve():
        key.rename(target)  # same folder: a rename, so no second copy of the key is left behind
        return
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(key.read_bytes())


def _copy_public(source: Path, target: Path) -> None:
    if source.resolve() != target.resolve():
        _files.write_public_file(target, source.read_bytes())


def _config_text(spiffe_id: SpiffeId, broker: str | None) -> str:
    lines = [
        "# Written by `isb pki install`; ISB_CONFIG=<this file> makes every isb command use it.",
        "[client]",
        'cert_dir = "."',
        f'trust_domain = "{spiffe_id.trust_domain}"',
    ]
    if spiffe_id.role is Role.AGENCY:
        lines.append(f'agency = "{spiffe_id.name}"')
    if broker:
        lines.append(f'broker = "{broker}"')
    return "\n".join(lines) + "\n"


def _install(args: argparse.Namespace) -> int:
    spiffe_id = _spiffe_id(args.certificate)
    directory: Path = args.dir or args.certificate.parent
    directory.mkdir(parents=True, exist_ok=True)
    key = _find_key(args, directory, spiffe_id)
    # The very checks a client makes before it connects: a folder that passes here connects.
    identity = load_identity(args.certificate, key, args.ca_cert, spiffe_id.trust_domain, spiffe_id.role)
    base = _base_name(spiffe_id)
    cert_target, key_target, ca_target = directory / f"{base}.crt", directory / f"{base}.key", directory / "ca.crt"
    _copy_public(args.certificate, cert_target)
    _copy_public(args.ca_cert, ca_target)
    _place_key(key, key_target)
    if key_target.stat().st_mode & 0o077 & ~0o040:  # 0600, or 0640 for a container's group (README)
        os.chmod(key_target, 0o600)
    config = directory / CONFIG_NAME
    _files.write_public_file(config, _config_text(spiffe_id, args.broker).encode())
    anchor = identity.trust_roots[0].public_bytes(serialization.Encoding.DER)
    out = output(args)
    out.record(
        {
            "spiffe_id": spiffe_id,
            "certificate": cert_target,
            "key": key_target,
            "ca_bundle": ca_target,
            "config": config,
            "expires": identity.certificate.not_valid_after_utc,
            "ca_fingerprint": hashlib.sha256(anchor).hexdigest(),
        },
        title=f"{directory} is ready",
    )
    out.say("compare the CA fingerprint with the one your admin gives you over another channel")
    if spiffe_id.role is Role.AGENCY:
        out.say(
            f"next: the admin runs `isb admin register {spiffe_id.name}` and adds {spiffe_id.name} to the "
            f"sharing policy; then `ISB_CONFIG={config} isb keys publish`"
        )
    return 0
