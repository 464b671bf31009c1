"""OCI registries of the local super cluster, so tenant pods really pull their images.

Stockade forces `imagePullPolicy: Always` on tenant containers: the node asks the registry for
every start, so a tenant can only run an image its own credentials can pull, never one merely
cached on the node by another tenant. Two registries (distribution's `registry`, built from its Go
module) serve the test images on this host:

- `stockade.local/...` from 127.0.0.1:5000, open to anyone (the e2e workload image);
- `private.stockade.local/...` from 127.0.0.2:80, behind htpasswd (a licensed image that only a
  tenant with the pull secret may run). containerd 1.6 hands a pull secret only to an endpoint
  whose host is the secret's server, so this one is reached by its name (an /etc/hosts entry the
  cluster adds and removes) on the default port.

containerd reaches them through `hosts.toml` files (its `config_path`), and every other registry
host goes through a proxy address where nothing listens: a pull of any other image fails at once
and no request, not even a DNS lookup, leaves the machine.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tarfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPEN_HOST = "stockade.local"
PRIVATE_HOST = "private.stockade.local"
# The e2e's licensed image and the credential that may pull it (test data, not a secret).
PRIVATE_USER = "licensed"
PRIVATE_PASSWORD = "stockade-e2e-only"
# Where containerd's registry traffic to any other host goes: nothing listens on the discard port.
DEAD_END_PROXY = "http://127.0.0.1:9"


@dataclass(frozen=True)
class Registry:
    name: str
    host: str  # the registry host in image references
    address: str  # where it listens (ip:port)
    endpoint: str  # where containerd reaches it
    private: bool = False

    def config(self, root: Path) -> str:
        """distribution's configuration (YAML is a superset of JSON)."""
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(root / self.name)}, "delete": {"enabled": False}},
            "http": {"addr": self.address},
        }
        if self.private:
            config["auth"] = {"htpasswd": {"realm": "stockade-e2e", "path": str(root / f"{self.name}.htpasswd")}}
        return json.dumps(config, indent=2)

    def hosts_toml(self) -> str:
        """containerd's hosts.toml for this registry's host: only its endpoint, over plain HTTP."""
        url = self.endpoint
        return f'server = "{url}"\n\n[host."{url}"]\n  capabilities = ["pull", "resolve"]\n'


OPEN = Registry("registry-open", OPEN_HOST, "127.0.0.1:5000", "http://127.0.0.1:5000")
PRIVATE = Registry("registry-private", PRIVATE_HOST, "127.0.0.2:80", f"http://{PRIVATE_HOST}", private=True)
REGISTRIES = (OPEN, PRIVATE)
# /etc/hosts entries the local cluster adds (and removes on teardown).
HOSTS_ENTRIES = {PRIVATE_HOST: PRIVATE.address.split(":")[0]}


def containerd_env() -> dict[str, str]:
    """Proxy settings that keep containerd's pulls on this machine (see the module's doc)."""
    return {
        "HTTP_PROXY": DEAD_END_PROXY,
        "HTTPS_PROXY": DEAD_END_PROXY,
        "NO_PROXY": ",".join(["127.0.0.1", "localhost", *HOSTS_ENTRIES]),
    }


def htpasswd(user: str, password: str) -> str:
    """One htpasswd line with a bcrypt hash (the only kind distribution accepts)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # the C library's bcrypt; gone in Python 3.13, where this would need `bcrypt`

    return f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n"


def write_files(root: Path, certs_dir: Path) -> dict[str, Path]:
    """Each registry's config (and htpasswd), and containerd's hosts.toml per registry host."""
    root.mkdir(parents=True, exist_ok=True)
    configs = {}
    for registry in REGISTRIES:
        (root / registry.name).mkdir(exist_ok=True)
        if registry.private:
            (root / f"{registry.name}.htpasswd").write_text(htpasswd(PRIVATE_USER, PRIVATE_PASSWORD))
        configs[registry.name] = root / f"{registry.name}.yaml"
        configs[registry.name].write_text(registry.config(root))
        hosts = certs_dir / registry.host / "hosts.toml"
        hosts.parent.mkdir(parents=True, exist_ok=True)
        hosts.write_text(registry.hosts_toml())
    return configs


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def dockerconfigjson(registry: Registry, user: str, password: str) -> str:
    """The `.dockerconfigjson` of a pull secret for `registry`."""
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {registry.host: {"auth": auth}}})


def _request(method: str, url: str, *, body: bytes | None = None, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    return urllib.request.urlopen(request, timeout=60)


def push(archive: Path, registry: Registry, repository: str, tag: str) -> str:
    """Push the OCI layout tar `archive` (see `images.write_oci_archive`) as `repository:tag`;
    returns the manifest's digest. Blobs the registry has already are not sent again."""
    base = f"http://{registry.address}/v2/{repository}"
    headers = {"Authorization": basic_auth(PRIVATE_USER, PRIVATE_PASSWORD)} if registry.private else {}
    with tarfile.open(archive) as tar:

        def read(name: str) -> bytes:
            member = tar.extractfile(name)
            assert member is not None, name
            return member.read()

        index = json.loads(read("index.json"))
        descriptor = index["manifests"][0]
        manifest_bytes = read(f"blobs/sha256/{descriptor['digest'][7:]}")
        manifest = json.loads(manifest_bytes)
        for blob in [manifest["config"], *manifest["layers"]]:
            digest = blob["digest"]
            try:
                _request("HEAD", f"{base}/blobs/{digest}", headers=headers).close()
                continue
            except urllib.error.HTTPError as error:
                if error.code != 404:
                    raise
            data = read(f"blobs/sha256/{digest[7:]}")
            assert "sha256:" + hashlib.sha256(data).hexdigest() == digest, digest
            with _request("POST", f"{base}/blobs/uploads/", body=b"", headers=headers) as started:
                location = started.headers["Location"]
            if location.startswith("/"):
                location = f"http://{registry.address}{location}"
            separator = "&" if "?" in location else "?"
            upload_headers = {**headers, "Content-Type": "application/octet-stream"}
            _request("PUT", f"{location}{separator}digest={digest}", body=data, headers=upload_headers).close()
        manifest_headers = {**headers, "Content-Type": manifest["mediaType"]}
        _request("PUT", f"{base}/manifests/{tag}", body=manifest_bytes, headers=manifest_headers).close()
    return str(descriptor["digest"])
