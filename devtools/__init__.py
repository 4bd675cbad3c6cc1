"""Harnesses shared by the tests and the benchmarks: the mesh's own processes on this machine.

- serve: `manage.py` commands and a `manage.py serve` child process, with a clean environment
- cluster: control-plane replicas as real processes on loopback (Raft, one data folder each)
- fleet: a control plane and agents (`python -m agents`) as real processes, for end-to-end runs
- triton_server: a real tritonserver on the CPU, from the nvidia-pytriton wheel
  (`python -m devtools.triton_server` runs one in the foreground)
- waiting: `wait_until`, the one polling loop they all wait with
- ports: a free TCP port on loopback

Nothing here is imported by the mesh itself (infermesh_site, meshcore, agents, dashboard).
"""
