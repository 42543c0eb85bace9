"""aws_loader: every boto3 session of the process reads service models through one loader,
so a model read once (by the inventory plugin, before Ansible forks its tasks) is not read
again."""

from __future__ import annotations

import os

import botocore.session


def test_sessions_share_one_loader_and_its_models(plugin) -> None:
    aws_loader = plugin("plugin_utils.aws_loader")
    first = aws_loader.with_shared_loader(botocore.session.get_session())
    second = aws_loader.with_shared_loader(botocore.session.get_session())
    assert first.get_component("data_loader") is second.get_component("data_loader") is aws_loader.shared_loader()
    model = first.get_service_model("ec2")
    # The second session's model is the parsed data the first one loaded, not a second read.
    assert second.get_service_model("ec2").operation_names == model.operation_names
    reads: list[str] = []
    files = aws_loader.shared_loader().file_loader
    original = files.load_file
    files.load_file = lambda path: reads.append(path) or original(path)
    try:
        aws_loader.with_shared_loader(botocore.session.get_session()).get_service_model("ec2")
        assert reads == []
        botocore.session.get_session().get_service_model("ec2")  # its own loader: not this one's files
    finally:
        del files.load_file
    assert reads == []


def test_a_plain_session_keeps_its_own_loader(plugin) -> None:
    aws_loader = plugin("plugin_utils.aws_loader")
    assert botocore.session.get_session().get_component("data_loader") is not aws_loader.shared_loader()


def test_the_controller_session_uses_it(plugin, monkeypatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    aws_here, aws_loader = plugin("plugin_utils.aws_here"), plugin("plugin_utils.aws_loader")
    here = aws_here.ControllerAWS()
    assert here.region == "eu-west-1" == os.environ["AWS_DEFAULT_REGION"]
    assert here.session._session.get_component("data_loader") is aws_loader.shared_loader()
