module stockade.dev/kubelet

go 1.24
