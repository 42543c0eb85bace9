"""csdl.gpu_lab.lab_report_lines: the end of a launch of one's own lab."""

from __future__ import annotations

from plugins.filter.lab_report import lab_report_lines

LAB = {"name": "lab1", "address": "127.0.0.5", "user": "ubuntu", "key_file": "/k.pem", "warnings": ["W1.", "W2."]}
INSTANCE = {"type": "g5.xlarge", "id": "i-1", "zone": "us-east-1a"}
WS = {"ssh_command": "ssh lab1", "local_port_changed": True, "local_port": 18889,
      "local_port_reason": "8888 is taken", "aliases": {"connect": "lab1", "stop": "lab1-stop"},
      "jupyter_url_file": "/w/url", "jupyter_alias": "lab1-jupyter",
      "commands": {"run_dir": "/r", "stop": "ansible-playbook stop.yml"}}


def test_a_set_up_workstation():
    lines = lab_report_lines(LAB, INSTANCE, {"note": " Launched. ", "jupyter": {"gpu": "NVIDIA L4", "url": "SECRET"},
                                             "workstation": WS, "commands": {}, "idle_minutes": 30})
    assert lines == [
        "Lab lab1 is up: g5.xlarge i-1 in us-east-1a", "Launched.", "W1. W2.",
        "Address (Elastic IP, kept across stop/start): 127.0.0.5", "GPU: NVIDIA L4",
        "Idle auto-stop: after 30 idle minutes", "Connect: ssh lab1", "Local port 18889: 8888 is taken",
        "Shortcuts (in a new terminal): lab1, lab1-stop",
        "Jupyter (once connected): lab1-jupyter, or open the URL in /w/url",
        "Stop it when you are done (you pay while it runs): lab1-stop in a new terminal,"
        " or in /r: ansible-playbook stop.yml",
    ]
    assert not any("SECRET" in line for line in lines)


def test_no_workstation_setup_and_no_host():
    lines = lab_report_lines({**LAB, "warnings": []}, INSTANCE,
                             {"note": None, "jupyter": {}, "workstation": {},
                              "commands": {"run_dir": "/r2", "stop": "make stop"}, "idle_minutes": 60})
    assert lines == ["Lab lab1 is up: g5.xlarge i-1 in us-east-1a",
                     "Address (Elastic IP, kept across stop/start): 127.0.0.5",
                     "Connect: ssh -i /k.pem ubuntu@127.0.0.5",
                     "Stop it when you are done (you pay while it runs): in /r2: make stop"]


def test_auto_stop_off():
    lines = lab_report_lines(LAB, INSTANCE, {"jupyter": {"url": "x"}, "workstation": {"commands": {}},
                                             "commands": {"run_dir": "/r", "stop": "s"}, "idle_minutes": "0"})
    assert "Idle auto-stop: off (you pay until you stop it)" in lines
    assert lines[-1] == "Stop it when you are done (you pay while it runs): in /r: s"
