"""Real Kubernetes control planes for tests, benchmarks and the local super cluster.

Starts upstream etcd, kube-apiserver and kube-controller-manager binaries (built by
`make testbin`) as local processes on random loopback ports, with certificates from
`stockade.certificates`.
"""

from stockade_dev.testbed.binaries import TestbinMissingError, find_binary, testbin_dir
from stockade_dev.testbed.controlplane import LocalControlPlane
from stockade_dev.testbed.process import ManagedProcess, leaked_processes

__all__ = [
    "LocalControlPlane",
    "ManagedProcess",
    "TestbinMissingError",
    "find_binary",
    "leaked_processes",
    "testbin_dir",
]
