"""`stockade` console script: `stockade kubeconfig <tenant>` and `stockade crd`.

More commands come from installed plugins (entry-point group `stockade.commands`, each a function
that adds a subparser whose defaults carry a `handler`): the development kit adds `stockade up`.
The product itself carries no test or local-cluster code."""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.metadata
import os
import sys
from pathlib import Path

from stockade import crd
from stockade.kube import ApiError, Credentials, KubeClient
from stockade.model import API_VERSION, KIND
from stockade.status import STALLED

PLUGIN_GROUP = "stockade.commands"


class CliError(Exception):
    pass


async def fetch_kubeconfig(tenant: str, variant: str | None) -> str:
    async with KubeClient(Credentials.from_environment()) as kube:
        try:
            obj = await kube.get(API_VERSION, KIND, tenant)
        except ApiError as error:
            if error.status == 404:
                raise CliError(f"no Tenant named {tenant!r}") from None
            raise CliError(f"cannot read Tenant {tenant!r}: {error}") from None
        ref = (obj.get("status") or {}).get("kubeconfigSecretRef")
        if not ref:
            status = obj.get("status") or {}
            phase = status.get("phase", "Pending")
            stalled: dict[str, str] = next((c for c in status.get("conditions") or [] if c.get("type") == STALLED), {})
            if stalled.get("status") == "True":  # it will never have one as it stands
                raise CliError(f"Tenant {tenant!r} has no kubeconfig and cannot get one: {stalled.get('message')}")
            raise CliError(f"Tenant {tenant!r} has no kubeconfig yet (phase {phase}); try again shortly")
        try:
            secret = await kube.get("v1", "Secret", ref["name"], ref["namespace"])
        except ApiError as error:
            raise CliError(f"cannot read Secret {ref['namespace']}/{ref['name']}: {error}") from None
        key = {"internal": "kubeconfig", "external": "kubeconfig-external"}.get(variant or "", ref["key"])
        data = secret.get("data") or {}
        if key not in data:
            raise CliError(f"Secret {ref['namespace']}/{ref['name']} has no {key!r} (the API server is not exposed)")
        return base64.b64decode(data[key]).decode()


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stockade", description="Hard multi-tenancy for Kubernetes.")
    commands = parser.add_subparsers(dest="command", required=True)
    kubeconfig = commands.add_parser("kubeconfig", help="print or write a tenant's admin kubeconfig")
    kubeconfig.add_argument("tenant")
    kubeconfig.add_argument("-o", "--output", type=Path, help="write to this file (mode 0600) instead of stdout")
    kubeconfig.add_argument(
        "--variant",
        choices=["internal", "external"],
        help="internal: the in-cluster Service URL; external: the exposed endpoint (default: external if exposed)",
    )
    commands.add_parser("crd", help="print the Tenant CustomResourceDefinition generated from the model")
    for plugin in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        plugin.load()(commands)
    args = parser.parse_args(argv)

    try:
        if getattr(args, "handler", None) is not None:
            return int(args.handler(args))
        if args.command == "crd":
            sys.stdout.write(crd.render())
        elif args.command == "kubeconfig":
            text = asyncio.run(fetch_kubeconfig(args.tenant, args.variant))
            if args.output:
                _write_private(args.output, text)
                print(f"wrote {args.output}", file=sys.stderr)
            else:
                sys.stdout.write(text)
    except (CliError, OSError) as error:
        print(f"stockade: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
