"""The syncer: tenant workloads mirrored into the super cluster, their status mirrored back."""
