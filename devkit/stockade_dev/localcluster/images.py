"""OCI images assembled from local files, without Docker or a registry.

Each image is one uncompressed layer written as an OCI image layout archive, annotated with its
full reference (`io.containerd.image.name`) so `ctr images import` registers it under exactly the
name the pod templates use. Everything is deterministic: same files, same digests.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# Documentation is left out of every Debian layer built here.
DEBIAN_EXCLUDED = ("doc", "man", "info", "locale", "lintian", "linda")

NONROOT_UID = 65532
PASSWD = (
    f"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT_UID}:{NONROOT_UID}:nonroot:/home/nonroot:/sbin/nologin\n"
)
GROUP = f"root:x:0:\nnonroot:x:{NONROOT_UID}:\n"
# tar: `kubectl cp`; stty: `kubectl exec -it`.
BUSYBOX_APPLETS = (
    "sh", "cat", "date", "echo", "env", "grep", "hostname", "httpd", "id", "kill", "ls", "nc",
    "nslookup", "printf", "ps", "seq", "sleep", "stty", "tar", "test", "timeout", "touch", "true",
    "wget",
)  # fmt: skip


@dataclass(frozen=True)
class ImageSpec:
    """An image: `files` maps a path inside the image to a file on this machine."""

    reference: str
    files: dict[str, Path]
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    symlinks: dict[str, str] = field(default_factory=dict)
    # False for a layer on top of a Debian layer: it keeps that layer's /etc/passwd and /etc/group.
    own_users: bool = True
    user: str = ""

    def fingerprint(self) -> str:
        """Changes whenever a source file or the image's shape changes (mtime and size of each file)."""
        shape = (self.reference, self.entrypoint, self.cmd, sorted(self.symlinks.items()), self.own_users, self.user)
        h = hashlib.sha256(repr(shape).encode())
        for target, source in sorted(self.files.items()):
            stat = source.stat()
            h.update(f"{target}={source}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return h.hexdigest()[:16]


def _tar_entries(spec: ImageSpec) -> Iterator[tuple[tarfile.TarInfo, bytes | Path | None]]:
    def directory(name: str, mode: int = 0o755) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode = tarfile.DIRTYPE, mode
        return info

    def regular(name: str, size: int, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mode = size, mode
        return info

    parents = ({"etc", "tmp"} if spec.own_users else set()) | {
        str(Path(p).parents[i]).lstrip("/")
        for p in [*spec.files, *spec.symlinks]
        for i in range(len(Path(p).parents) - 1)
    }
    for name in sorted(parents):
        yield directory(name, 0o1777 if name == "tmp" else 0o755), None
    for name, text in (("etc/passwd", PASSWD), ("etc/group", GROUP)) if spec.own_users else ():
        yield regular(name, len(text), 0o644), text.encode()
    for target, source in sorted(spec.files.items()):
        yield regular(target.lstrip("/"), source.stat().st_size, 0o755), source
    for link, points_to in sorted(spec.symlinks.items()):
        info = tarfile.TarInfo(link.lstrip("/"))
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, points_to, 0o777
        yield info, None


def _write_layer(spec: ImageSpec, out: Any) -> None:
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, content in _tar_entries(spec):
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if isinstance(content, Path):
                with content.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info, io.BytesIO(content) if content is not None else None)


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def image_config(spec: ImageSpec, diff_ids: list[str]) -> dict[str, Any]:
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            **({"Entrypoint": list(spec.entrypoint)} if spec.entrypoint else {}),
            **({"Cmd": list(spec.cmd)} if spec.cmd else {}),
            **({"User": spec.user} if spec.user else {}),
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created_by": "stockade_dev.localcluster.images", "created": "1970-01-01T00:00:00Z"} for _ in diff_ids
        ],
    }


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def write_oci_archive(spec: ImageSpec, target: Path, below: tuple[Path, ...] = ()) -> Path:
    """Write `spec` as an OCI image layout tar at `target` (atomically) and return it; `below` are
    layer tars (e.g. a `debian_layer`) under the spec's own layer, bottom first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        layer_path = Path(tmp) / "layer.tar"
        with layer_path.open("wb") as out:
            _write_layer(spec, out)
        layers = [*below, layer_path]
        return pack_layers(spec.reference, layers, image_config(spec, [file_digest(p) for p in layers]), target)


def pack_layers(reference: str, layers: list[Path], config: dict[str, Any], target: Path) -> Path:
    """Write an OCI image layout tar at `target` (atomically): the uncompressed layer tars
    `layers` (bottom first) under `config` (whose rootfs.diff_ids are theirs), named `reference`."""
    config_digest, config_bytes = _blob(json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": layer.stat().st_size}
            for layer, digest in zip(layers, config["rootfs"]["diff_ids"], strict=True)
        ],
    }
    manifest_digest, manifest_bytes = _blob(json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": manifest["mediaType"],
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "annotations": {
                    "io.containerd.image.name": reference,
                    "org.opencontainers.image.ref.name": reference.rsplit(":", 1)[1],
                },
            }
        ],
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with tarfile.open(partial, "w") as archive:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index).encode())
        add(f"blobs/sha256/{config_digest[7:]}", config_bytes)
        add(f"blobs/sha256/{manifest_digest[7:]}", manifest_bytes)
        for layer, digest in zip(layers, config["rootfs"]["diff_ids"], strict=True):
            archive.add(layer, f"blobs/sha256/{digest[7:]}")
    partial.replace(target)
    return target


def cached_archive(spec: ImageSpec, cache_dir: Path, below: tuple[Path, ...] = ()) -> Path:
    """The archive of `spec` (over the layers `below`) in `cache_dir`, written only when its
    fingerprint is new."""
    safe = spec.reference.replace("/", "_").replace(":", "_")
    target = cache_dir / f"{safe}-{spec.fingerprint()}{''.join(f'-{p.stem[-16:]}' for p in below)}.tar"
    return target if target.exists() else write_oci_archive(spec, target, below)


def debian_layer(
    cache: Path, name: str, packages: tuple[str, ...], hooks: tuple[str, ...] = (), out: Any = print
) -> Path:
    """A Debian root filesystem as one layer tar: dpkg's Essential set (a shell, coreutils, libc)
    and `packages`, built by `mmdebstrap` from Debian's archive without documentation; `hooks` are
    mmdebstrap customize hooks (shell, the root as `$1`). Cached under `name` and a digest of its
    inputs (it changes only with the suite, the packages and the hooks)."""
    digest = hashlib.sha256("\0".join((DEBIAN_SUITE, *packages, *hooks)).encode()).hexdigest()[:16]
    target = cache / f"{name}-{DEBIAN_SUITE}-{digest}.tar"
    if target.exists():
        return target
    if shutil.which("mmdebstrap") is None:
        raise FileNotFoundError("mmdebstrap missing: run `e2e/install-deps`")
    out(f"    building the Debian {DEBIAN_SUITE} layer {name} ({', '.join(packages)}) with mmdebstrap …")
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial.tar")
    subprocess.run(
        [
            "mmdebstrap", "--quiet", "--variant=essential", f"--include={','.join(packages)}",
            "--skip=output/dev", *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in DEBIAN_EXCLUDED),
            *(f"--customize-hook={hook}" for hook in hooks),
            DEBIAN_SUITE, str(partial), DEBIAN_MIRROR,
        ],
        check=True, timeout=900, env={**os.environ, "SOURCE_DATE_EPOCH": "0"},
    )  # fmt: skip
    partial.replace(target)
    return target


def control_plane_images(registry: str, version: str, etcd_tag: str, bin_dir: Path) -> list[ImageSpec]:
    """The images the tenant templates name for `version`, from that version's binaries."""
    images = [
        ImageSpec(f"{registry}/{name}:{version}", {f"/usr/local/bin/{name}": bin_dir / name})
        for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
    ]
    images.append(ImageSpec(f"{registry}/etcd:{etcd_tag}", {"/usr/local/bin/etcd": bin_dir / "etcd"}))
    return images


def busybox_image(reference: str, busybox: Path) -> ImageSpec:
    return ImageSpec(
        reference,
        {"/bin/busybox": busybox},
        cmd=("sh",),
        symlinks={f"/bin/{applet}": "busybox" for applet in BUSYBOX_APPLETS},
    )


@functools.cache
def all_applets(busybox: Path) -> tuple[str, ...]:
    """Every applet `busybox` was built with: the upstream test images have a full userland."""
    listed = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    return tuple(sorted(set(listed) - {"busybox"}))


def full_busybox_image(reference: str, busybox: Path) -> ImageSpec:
    """The conformance suite's busybox: every applet under /bin, `sh` by default."""
    return ImageSpec(
        reference,
        {"/bin/busybox": busybox},
        cmd=("sh",),
        symlinks={f"/bin/{applet}": "busybox" for applet in all_applets(busybox)},
    )


# The userland of upstream's Debian- and Alpine-based test images, as one Debian layer: agnhost is
# Alpine (busybox's applets) with bind-tools, curl, netcat-openbsd, iproute2, iperf and bash added,
# jessie-dnsutils is Debian with dnsutils, nonroot is Debian. Here: Debian's Essential set (bash,
# coreutils, …) with the same tools, and wget and ps, which Alpine's busybox gives.
E2E_USERLAND_PACKAGES = ("bind9-dnsutils", "curl", "netcat-openbsd", "iproute2", "iperf", "wget", "procps")
# agnhost's user and group for the suite's "defined in image" tests, its /uploads, and its iperf path.
E2E_USERLAND_HOOKS = (
    "echo 'user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh' >> \"$1/etc/passwd\"",
    "echo 'user-defined-in-image:x:1000:' >> \"$1/etc/group\"",
    "echo 'group-defined-in-image:x:50000:user-defined-in-image' >> \"$1/etc/group\"",
    'mkdir -p "$1/uploads" "$1/home/user-defined-in-image"',
    'chown 1000:1000 "$1/home/user-defined-in-image"',
    'ln -s /usr/bin/iperf "$1/usr/local/bin/iperf"',
)


def e2e_userland(cache: Path, out: Any = print) -> Path:
    """The Debian layer under the suite's agnhost, jessie-dnsutils and nonroot images."""
    return debian_layer(cache, "e2e-userland", E2E_USERLAND_PACKAGES, E2E_USERLAND_HOOKS, out)


def agnhost_image(reference: str, agnhost: Path, porter: Path, coredns: Path, extra: dict[str, Path] | None = None,
                  cmd: tuple[str, ...] = ("pause",)) -> ImageSpec:  # fmt: skip
    """The conformance suite's agnhost, built from its Go module, over `e2e_userland`: upstream's
    has agnhost at /agnhost (also as /agnhost-2), porter's test certificate at /localhost.crt and
    .key, and CoreDNS at /coredns. `extra` files and `cmd` make the images built from it (kitten,
    nautilus: a picture and data.json served by `test-webserver`)."""
    files = {"/agnhost": agnhost, "/localhost.crt": porter / "localhost.crt",
             "/localhost.key": porter / "localhost.key", "/coredns": coredns, **(extra or {})}  # fmt: skip
    return ImageSpec(reference, files, entrypoint=("/agnhost",), cmd=cmd, symlinks={"/agnhost-2": "agnhost"},
                     own_users=False)  # fmt: skip


def text_file(folder: Path, name: str, text: str) -> Path:
    """`text` as a file in `folder`, rewritten only when it changed (an image's fingerprint reads
    its files' mtimes)."""
    path = folder / name
    if not path.exists() or path.read_text() != text:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def web_server_image(reference: str, busybox: Path, root: str, command: str, index: Path, scripts: Path) -> ImageSpec:
    """A stand-in for upstream's httpd and nginx images (Alpine's Apache and nginx): the suite
    uses them as a web server on port 80 serving `root`/index.html, started by the image's own
    command (`httpd-foreground`, `nginx -g 'daemon off;'`), and runs `sh`, `mv`, `test` in them.
    Here busybox's `httpd` serves the same root, with every busybox applet under /bin."""
    name = Path(command).name
    script = text_file(scripts, name, f"#!/bin/sh\n# upstream's {name}, served by busybox httpd\n"
                                      f"exec httpd -f -p 80 -h {root}\n")  # fmt: skip
    base = full_busybox_image(reference, busybox)
    cmd = (name,) if name == "httpd-foreground" else (name, "-g", "daemon off;")
    return ImageSpec(reference, {**base.files, command: script, f"{root}/index.html": index}, cmd=cmd,
                     symlinks=base.symlinks)  # fmt: skip
