"""``fleetctl keys``: create role keys and root v1, rotate to the next root."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from control_plane.cli._common import (
    console,
    err_console,
    one_line_errors,
    parse_duration,
    parse_time,
)
from control_plane.signing import keyring, roots
from control_plane.signing.keyring import DEFAULT_PASSPHRASE_ENV, KeyDir, KeyringError
from fleetcore.envelope import Envelope
from fleetcore.keys import PrivateKey
from fleetcore.metadata import ROLES, Root
from fleetcore.trust import TrustedSet

app = typer.Typer(
    help="Create and rotate the root, release and director keys.", no_args_is_help=True
)

PassphraseEnv = Annotated[
    str,
    typer.Option(
        "--passphrase-env",
        metavar="VAR",
        help="Environment variable holding the private-key passphrase. When it is set, new "
        "keys are encrypted with it and encrypted keys are read with it.",
    ),
]
Expires = Annotated[str, typer.Option("--expires-in", help="Root lifetime: 365d, 12h or 30m.")]


def _generate(keydir: KeyDir, role: str, count: int) -> tuple[PrivateKey, ...]:
    keys = tuple(PrivateKey.generate() for _ in range(count))
    for key in keys:
        keydir.save_key(role, key)
    return keys


def _warn_plaintext(keydir: KeyDir) -> None:
    if keyring.passphrase_from_env(keydir.passphrase_env) is None:
        err_console.print(
            f"[yellow]warning:[/yellow] private keys are not encrypted; set "
            f"{escape(keydir.passphrase_env)} to encrypt them, and keep root keys offline."
        )


@app.command("init")
@one_line_errors
def init(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Directory to create the keys and root in.")
    ],
    root_keys: Annotated[int, typer.Option(min=1, help="Number of root keys.")] = 1,
    root_threshold: Annotated[int, typer.Option(min=1, help="Root signatures required.")] = 1,
    release_keys: Annotated[int, typer.Option(min=1, help="Number of release keys.")] = 1,
    release_threshold: Annotated[int, typer.Option(min=1, help="Release signatures required.")] = 1,
    director_keys: Annotated[int, typer.Option(min=1, help="Number of director keys.")] = 1,
    expires_in: Expires = "365d",
    passphrase_env: PassphraseEnv = DEFAULT_PASSPHRASE_ENV,
) -> None:
    """Create root, release and director keys and the signed root v1.

    Private keys are written with mode 0600 under DIR/keys; root metadata goes
    to DIR/root/1.root.json, the file every device pins at enrollment.
    """
    keydir = KeyDir(directory, passphrase_env)
    if keydir.root_versions() or (keydir.keys_dir.exists() and any(keydir.keys_dir.iterdir())):
        raise KeyringError(f"{directory} already holds keys or root metadata")
    for role, count, threshold in (
        ("root", root_keys, root_threshold),
        ("release", release_keys, release_threshold),
    ):
        if threshold > count:
            raise typer.BadParameter(f"{role} threshold {threshold} exceeds {count} key(s)")
    _warn_plaintext(keydir)
    chosen = {
        "root": roots.RoleKeys(_generate(keydir, "root", root_keys), root_threshold),
        "release": roots.RoleKeys(_generate(keydir, "release", release_keys), release_threshold),
        "director": roots.RoleKeys(_generate(keydir, "director", director_keys), 1),
    }
    root = roots.build_root(
        chosen, version=1, issued=parse_time(None), expires_in=parse_duration(expires_in)
    )
    envelope = roots.sign(root, chosen["root"].keys)
    path = keydir.root_path(1)
    keyring.write_public_file(path, envelope.to_bytes())
    _describe(root, path)


@app.command("rotate")
@one_line_errors
def rotate(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Key directory made by 'keys init'.")
    ],
    role: Annotated[
        list[str] | None,
        typer.Option(
            "--role", help="Role whose keys to replace (repeatable): root, release, director."
        ),
    ] = None,
    threshold: Annotated[
        int | None, typer.Option(min=1, help="New threshold for the rotated role(s).")
    ] = None,
    keys: Annotated[
        int | None, typer.Option("--keys", min=1, help="Number of new keys per rotated role.")
    ] = None,
    expires_in: Expires = "365d",
    passphrase_env: PassphraseEnv = DEFAULT_PASSPHRASE_ENV,
) -> None:
    """Write the next root version, optionally with new keys for some roles.

    With no --role it only renews the expiry. The new root is signed by the
    current root keys and, when root keys change, by the new ones too; rotated
    private keys move to DIR/keys/retired.
    """
    keydir = KeyDir(directory, passphrase_env)
    roles = list(dict.fromkeys(role or []))
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise typer.BadParameter(f"unknown role {unknown[0]!r}; choose from {', '.join(ROLES)}")
    current_path = keydir.latest_root_path()
    current = Root.from_dict(Envelope.from_bytes(current_path.read_bytes()).signed)
    private = keydir.load_keys()
    replaced: dict[str, roots.RoleKeys] = {}
    for name in roles:
        old = current.role(name)
        count = keys or len(old.keyids)
        replaced[name] = roots.RoleKeys(
            _generate(keydir, name, count), min(threshold or old.threshold, count)
        )
    new = roots.rotate(
        current, replaced=replaced, issued=parse_time(None), expires_in=parse_duration(expires_in)
    )
    old_signers = [private[k] for k in current.role("root").keyids if k in private]
    new_signers = [private.get(k) for k in new.role("root").keyids]
    fresh = replaced["root"].keys if "root" in replaced else ()
    signers = {k.keyid: k for k in (*old_signers, *(k for k in new_signers if k), *fresh)}
    envelope = roots.sign(new, list(signers.values()))
    # Prove the chain before writing it: the new root must verify from the current one.
    TrustedSet(current_path.read_bytes()).update_root(envelope.to_bytes())
    path = keydir.root_path(new.version)
    keyring.write_public_file(path, envelope.to_bytes())
    for name in roles:
        for keyid in current.role(name).keyids:
            if keyid in private and keyid not in new.keys:
                keydir.retire(private[keyid], name)
    _describe(new, path)


def _describe(root: Root, path: Path) -> None:
    console.print(f"wrote root v{root.version} to {path} (expires {root.expires:%Y-%m-%d})")
    for name, role in root.roles.items():
        ids = ", ".join(k[:12] for k in role.keyids)
        console.print(f"  {name:<9} {role.threshold}-of-{len(role.keyids)}  {ids}")
