"""csdl.gpu_lab.lab_hosts: the hosts of the labs that answer SSH, as add_host takes them."""

from __future__ import annotations

from plugins.filter.lab_hosts import lab_hosts


def lab(name: str, ready: object) -> dict[str, object]:
    return {"ec2_gpu_host_lab": {"name": name, "address": "127.0.0.5", "user": "ubuntu",
                                 "key_file": f"/h/.ssh/{name}-server.pem", "ssh_ready": ready}}


def test_only_labs_that_answer_and_did_not_fail() -> None:
    hostvars = {"a": lab("a", True), "b": lab("b", False), "c": lab("c", "True") | {"gpu_lab_launch_error": "x"},
                "d": {}, "e": lab("e", "true")}
    hosts = lab_hosts(["a", "b", "c", "d", "e"], hostvars, home="/h")
    assert [h["name"] for h in hosts] == ["a-server", "e-server"]
    assert hosts[0] == {"name": "a-server", "lab": hostvars["a"]["ec2_gpu_host_lab"], "address": "127.0.0.5",
                        "user": "ubuntu",
                        "key_file": "/h/.ssh/a-server.pem",
                        "ssh_args": "-o UserKnownHostsFile=/h/.gpu_lab/a/known_hosts -o StrictHostKeyChecking=yes "
                                    "-o IdentitiesOnly=yes"}
