"""Stockade's development kit (not shipped): `testbed` runs real control planes as local
processes, `localcluster` a real single-node super cluster without Docker, `up` is `stockade up`."""
