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
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    def fingerprint(self) -> str:
        """Changes whenever a source file or the image's shape changes (mtime and size of each file)."""
        h = hashlib.sha256(repr((self.reference, self.entrypoint, self.cmd, sorted(self.symlinks.items()))).encode())
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

    parents = {"etc", "tmp"} | {
        str(Path(p).parents[i]).lstrip("/")
        for p in [*spec.files, *spec.symlinks]
        for i in range(len(Path(p).parents) - 1)
    }
    for name in sorted(parents):
        yield directory(name, 0o1777 if name == "tmp" else 0o755), None
    for name, text in (("etc/passwd", PASSWD), ("etc/group", GROUP)):
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


def image_config(spec: ImageSpec, layer_digest: str) -> dict[str, Any]:
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            **({"Entrypoint": list(spec.entrypoint)} if spec.entrypoint else {}),
            **({"Cmd": list(spec.cmd)} if spec.cmd else {}),
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "stockade_dev.localcluster.images", "created": "1970-01-01T00:00:00Z"}],
    }


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def write_oci_archive(spec: ImageSpec, target: Path) -> Path:
    """Write `spec` as an OCI image layout tar at `target` (atomically) and return it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        layer_path = Path(tmp) / "layer.tar"
        with layer_path.open("wb") as out:
            _write_layer(spec, out)
        return pack_layers(spec.reference, [layer_path], image_config(spec, file_digest(layer_path)), target)


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


def cached_archive(spec: ImageSpec, cache_dir: Path) -> Path:
    """The archive of `spec` in `cache_dir`, written only when its fingerprint is new."""
    safe = spec.reference.replace("/", "_").replace(":", "_")
    target = cache_dir / f"{safe}-{spec.fingerprint()}.tar"
    return target if target.exists() else write_oci_archive(spec, target)


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


def agnhost_image(reference: str, agnhost: Path, busybox: Path, porter: Path) -> ImageSpec:
    """The conformance suite's agnhost, built from its Go module: upstream's is Alpine with agnhost
    at /agnhost (also as /agnhost-2), porter's test certificate at /localhost.crt and .key, and a
    shell with the usual tools; here the shell and tools are busybox's applets."""
    return ImageSpec(
        reference,
        {
            "/agnhost": agnhost,
            "/bin/busybox": busybox,
            "/localhost.crt": porter / "localhost.crt",
            "/localhost.key": porter / "localhost.key",
        },
        entrypoint=("/agnhost",),
        cmd=("pause",),
        symlinks={"/agnhost-2": "agnhost", **{f"/bin/{applet}": "busybox" for applet in all_applets(busybox)}},
    )
