"""Stand-in hosts: a booted Debian container (systemd-nspawn) for each emulated EC2
instance, reachable over SSH at the instance's Elastic IP (a 127.x.y.z address).

* ``image``: builds and caches the base root file system, dressed like the DLAMI;
* ``net``: network namespaces, veth pairs, the EIP routes, the masquerade table;
* ``cgroups``: the cgroup directory each container runs in;
* ``host``: ``StandIn``, one container's life (boot, power off, destroy);
* ``controller``: ``HostController``, which ties stand-ins to moto's instances;
* ``cloudinit``: the part of EC2 user data emulated (cloud-config ``ssh_authorized_keys``);
* ``disks``: a stand-in's disk copied into an image (CreateImage) and out of it (RunInstances);
* ``cleanup``: owner records, ``cleanup_stale`` and ``reap_orphans`` (after a crash);
* ``system``: running commands, mounts, file locks.

Needs root on Linux; ``local_cloud.cloud.hosts_unavailable_reason()`` says why not.
"""
