"""A real single-node super cluster on this machine, without Docker: the test bed's control plane
plus containerd (runc and gVisor's runsc), the kubelet, kube-proxy, CNI bridge networking,
CoreDNS and locally built images. `python -m stockade_dev.localcluster up|down|status`."""
