"""Pure builders of the local super cluster: node configuration and OCI image archives."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from stockade_dev.localcluster import host, images
from stockade_dev.localcluster import node as n
from stockade_dev.localcluster.host import HostSnapshot

LAYOUT = n.Layout(state=Path("/s"), run=Path("/r"), volumes=Path("/tmp/v"))


def test_containerd_registers_gvisor_under_the_runtime_class_handler() -> None:
    config = n.containerd_config(LAYOUT, Path("/s/runsc.toml"))
    assert '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]' in config
    assert 'runtime_type = "io.containerd.runsc.v1"' in config
    assert 'ConfigPath = "/s/runsc.toml"' in config
    assert 'address = "/r/containerd.sock"' in config and 'root = "/s/containerd"' in config
    assert "SystemdCgroup = false" in config and "restrict_oom_score_adj = true" in config
    assert f'sandbox_image = "{n.SANDBOX_IMAGE}"' in config


def test_runsc_options_name_the_binary_and_platform() -> None:
    text = n.runsc_config(Path("/bin/runsc"), LAYOUT, "systrap")
    assert 'binary_name = "/bin/runsc"' in text and 'platform = "systrap"' in text and 'root = "/r/runsc"' in text


def test_cni_is_a_bridge_with_host_local_addresses_and_port_mapping() -> None:
    conf = n.cni_conflist(LAYOUT)
    bridge, portmap = conf["plugins"]
    assert bridge["type"] == "bridge" and bridge["bridge"] == n.BRIDGE and bridge["ipMasq"]
    assert bridge["ipam"]["ranges"] == [[{"subnet": n.POD_CIDR}]]
    assert bridge["ipam"]["dataDir"].startswith("/s/")
    assert portmap["type"] == "portmap"


def test_kubelet_is_locked_down() -> None:
    config = n.kubelet_config(LAYOUT, client_ca=Path("/ca"), serving_cert=Path("/c"), serving_key=Path("/k"))
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authorization"]["mode"] == "Webhook" and config["readOnlyPort"] == 0
    assert config["clusterDNS"] == [n.DNS_SERVICE_IP]


def test_kube_router_only_enforces_network_policy() -> None:
    args = n.kube_router_args(kubeconfig=Path("/k"))
    assert "--run-firewall=true" in args
    assert {"--run-router=false", "--run-service-proxy=false", "--enable-cni=false"} <= set(args)


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_oci_archive_is_deterministic_and_named_for_containerd(tmp_path: Path) -> None:
    binary = tmp_path / "tool"
    binary.write_bytes(b"#!/bin/sh\necho hi\n")
    spec = images.ImageSpec("registry.k8s.io/tool:v1", {"/usr/local/bin/tool": binary}, entrypoint=("tool",),
                            symlinks={"/bin/alias": "../usr/local/bin/tool"})  # fmt: skip
    first = _members(images.write_oci_archive(spec, tmp_path / "a.tar"))
    second = _members(images.write_oci_archive(spec, tmp_path / "b.tar"))
    assert first == second  # same input, same bytes, same digests
    index = json.loads(first["index.json"])
    annotations = index["manifests"][0]["annotations"]
    assert annotations["io.containerd.image.name"] == "registry.k8s.io/tool:v1"
    manifest = json.loads(first["blobs/sha256/" + index["manifests"][0]["digest"][7:]])
    config = json.loads(first["blobs/sha256/" + manifest["config"]["digest"][7:]])
    assert config["config"]["Entrypoint"] == ["tool"] and config["os"] == "linux"
    layer_digest = manifest["layers"][0]["digest"]
    layer = first["blobs/sha256/" + layer_digest[7:]]
    assert "sha256:" + hashlib.sha256(layer).hexdigest() == layer_digest == config["rootfs"]["diff_ids"][0]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        assert tar.extractfile("usr/local/bin/tool").read() == binary.read_bytes()  # type: ignore[union-attr]
        assert tar.getmember("bin/alias").linkname == "../usr/local/bin/tool"
        assert tar.getmember("tmp").mode == 0o1777
        assert b"nonroot:x:65532" in tar.extractfile("etc/passwd").read()  # type: ignore[union-attr]


def test_archive_cache_follows_the_source_files(tmp_path: Path) -> None:
    binary = tmp_path / "tool"
    binary.write_bytes(b"one")
    spec = images.ImageSpec("example.local/tool:1", {"/tool": binary})
    first = images.cached_archive(spec, tmp_path / "cache")
    assert images.cached_archive(spec, tmp_path / "cache") == first
    binary.write_bytes(b"two, longer")
    assert images.cached_archive(spec, tmp_path / "cache") != first


def test_host_snapshot_round_trips(tmp_path: Path) -> None:
    snapshot = HostSnapshot(nft_tables=["ip filter"], sysctls={"net/ipv4/ip_forward": "0"}, ipsets=["a"])
    snapshot.save(tmp_path / "snap.json")
    assert HostSnapshot.load(tmp_path / "snap.json") == snapshot
    assert HostSnapshot.load(tmp_path / "missing.json") is None


def test_containerd_reaches_registries_only_through_hosts_files_and_a_dead_end_proxy() -> None:
    from stockade_dev.localcluster import registry

    assert 'config_path = "/s/certs.d"' in n.containerd_config(LAYOUT, Path("/s/runsc.toml"))
    env = registry.containerd_env()
    assert env["HTTPS_PROXY"] == env["HTTP_PROXY"] == "http://127.0.0.1:9"
    assert set(env["NO_PROXY"].split(",")) == {"127.0.0.1", "localhost", registry.PRIVATE_HOST}
    assert registry.PRIVATE.hosts_toml().startswith(f'server = "http://{registry.PRIVATE_HOST}"')
    assert 'capabilities = ["pull", "resolve"]' in registry.OPEN.hosts_toml()


def test_private_registry_config_requires_htpasswd(tmp_path: Path) -> None:
    from stockade_dev.localcluster import registry

    configs = registry.write_files(tmp_path / "reg", tmp_path / "certs.d")
    private = json.loads(configs["registry-private"].read_text())
    assert private["auth"]["htpasswd"]["path"].endswith("registry-private.htpasswd")
    assert private["http"]["addr"] == registry.PRIVATE.address
    assert "auth" not in json.loads(configs["registry-open"].read_text())
    line = (tmp_path / "reg" / "registry-private.htpasswd").read_text()
    assert line.startswith(f"{registry.PRIVATE_USER}:$2") and registry.PRIVATE_PASSWORD not in line
    assert (tmp_path / "certs.d" / registry.PRIVATE_HOST / "hosts.toml").exists()
    auths = json.loads(registry.dockerconfigjson(registry.PRIVATE, "u", "p"))["auths"]
    assert list(auths) == [registry.PRIVATE_HOST]


def test_hosts_entries_are_added_once_and_removed(tmp_path: Path) -> None:
    from stockade_dev.localcluster import host

    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    host.add_hosts_entries({"a.local": "127.0.0.2"}, hosts)
    host.add_hosts_entries({"a.local": "127.0.0.2"}, hosts)
    assert hosts.read_text().count("a.local") == 1
    host.remove_hosts_entries(hosts)
    assert hosts.read_text() == "127.0.0.1 localhost\n"


def fake_proc_sys(tmp_path: Path, values: dict[str, str]) -> Path:
    for key, value in values.items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_text(f"{value}\n")
    return tmp_path


def test_inotify_limits_are_raised_only_when_lower(tmp_path: Path) -> None:
    low = fake_proc_sys(tmp_path / "low", {**{k: "0" for k in host.SYSCTLS}, "fs/inotify/max_user_instances": "128",
                                           "fs/inotify/max_user_watches": "999999"})  # fmt: skip
    raised = host.apply_sysctls(low)
    assert raised == {"fs/inotify/max_user_instances": (128, host.SYSCTL_MINIMUMS["fs/inotify/max_user_instances"])}
    assert (low / "fs/inotify/max_user_instances").read_text() == str(
        host.SYSCTL_MINIMUMS["fs/inotify/max_user_instances"]
    )
    assert (low / "fs/inotify/max_user_watches").read_text() == "999999\n"  # higher already: left alone
    assert (low / "net/ipv4/ip_forward").read_text() == "1"


def test_a_limit_that_cannot_be_raised_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_proc_sys(tmp_path, {**{k: "0" for k in host.SYSCTLS}, "fs/inotify/max_user_instances": "128",
                                    "fs/inotify/max_user_watches": "999999"})  # fmt: skip
    write = Path.write_text

    def read_only(self: Path, text: str, *args: Any, **kwargs: Any) -> int:
        if self.name == "max_user_instances":  # as in a container, where /proc/sys is read-only
            raise OSError(errno.EROFS, "Read-only file system")
        return write(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", read_only)
    with pytest.raises(
        host.HostLimitError,
        match=r"fs\.inotify\.max_user_instances is 128, below the 1024 .*"
        r"Read-only file system.*sysctl -w fs\.inotify\.max_user_instances=1024",
    ):
        host.apply_sysctls(root)


def test_agnhost_image_has_upstreams_paths_over_the_debian_userland(tmp_path: Path) -> None:
    files = {name: tmp_path / name for name in ("agnhost", "coredns", "localhost.crt", "localhost.key")}
    for path in files.values():
        path.write_text("x")
    spec = images.agnhost_image("r/agnhost:2.56", files["agnhost"], tmp_path, files["coredns"])
    assert spec.entrypoint == ("/agnhost",) and spec.cmd == ("pause",)
    assert {"/agnhost", "/localhost.crt", "/localhost.key", "/coredns"} <= set(spec.files)
    assert spec.symlinks == {"/agnhost-2": "agnhost"}
    # The shell, dig, nc and curl come from the Debian layer below, and so do its users.
    assert not spec.own_users
    assert {"bind9-dnsutils", "netcat-openbsd", "curl"} <= set(images.E2E_USERLAND_PACKAGES)
    assert any("group-defined-in-image:x:50000:user-defined-in-image" in h for h in images.E2E_USERLAND_HOOKS)
    kitten = images.agnhost_image("r/kitten:1.7", files["agnhost"], tmp_path, files["coredns"],
                                  {"/data.json": files["coredns"]}, ("test-webserver",))  # fmt: skip
    assert kitten.cmd == ("test-webserver",) and "/data.json" in kitten.files and "/agnhost" in kitten.files


def test_a_layer_over_a_debian_layer_keeps_its_users_and_stacks_below_its_own(tmp_path: Path) -> None:
    below = tmp_path / "debian.tar"
    with tarfile.open(below, "w") as tar:
        info = tarfile.TarInfo("etc/passwd")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"root\n"))
    tool = tmp_path / "tool"
    tool.write_text("x")
    spec = images.ImageSpec("r/nonroot:1.5", {"/tool": tool}, own_users=False, user="1234")
    members = _members(images.write_oci_archive(spec, tmp_path / "a.tar", (below,)))
    index = json.loads(members["index.json"])
    manifest = json.loads(members["blobs/sha256/" + index["manifests"][0]["digest"][7:]])
    config = json.loads(members["blobs/sha256/" + manifest["config"]["digest"][7:]])
    assert config["config"]["User"] == "1234"
    assert [layer["digest"] for layer in manifest["layers"]] == config["rootfs"]["diff_ids"]
    assert config["rootfs"]["diff_ids"][0] == images.file_digest(below)
    with tarfile.open(fileobj=io.BytesIO(members["blobs/sha256/" + config["rootfs"]["diff_ids"][1][7:]])) as tar:
        assert tar.getnames() == ["tool"]  # no /etc/passwd over the Debian one


def test_web_server_stand_in_serves_upstreams_root_with_its_command(tmp_path: Path) -> None:
    index = tmp_path / "index.html"
    index.write_text("<h1>It works!</h1>")
    spec = images.web_server_image("r/httpd:2.4.38-4", Path("/bin/busybox"), "/usr/local/apache2/htdocs",
                                   "/usr/local/bin/httpd-foreground", index, tmp_path / "scripts")  # fmt: skip
    assert spec.cmd == ("httpd-foreground",)
    assert spec.files["/usr/local/apache2/htdocs/index.html"] == index
    script = spec.files["/usr/local/bin/httpd-foreground"].read_text()
    assert "exec httpd -f -p 80 -h /usr/local/apache2/htdocs" in script
    assert {"/bin/sh", "/bin/mv", "/bin/httpd"} <= set(spec.symlinks)
    nginx = images.web_server_image("r/nginx:1.14-4", Path("/bin/busybox"), "/usr/share/nginx/html",
                                    "/usr/sbin/nginx", index, tmp_path / "scripts")  # fmt: skip
    assert nginx.cmd == ("nginx", "-g", "daemon off;")
    # Rewritten only when it changes: the image's fingerprint reads the file's mtime.
    before = spec.files["/usr/local/bin/httpd-foreground"].stat().st_mtime_ns
    images.web_server_image("r/httpd:2.4.38-4", Path("/bin/busybox"), "/usr/local/apache2/htdocs",
                            "/usr/local/bin/httpd-foreground", index, tmp_path / "scripts")  # fmt: skip
    assert spec.files["/usr/local/bin/httpd-foreground"].stat().st_mtime_ns == before
