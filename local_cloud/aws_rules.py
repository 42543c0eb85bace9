"""EC2's own rules where moto is laxer, on the paths gpu_lab's flows take.

* StartInstances: EC2 sets a started instance's ``LaunchTime`` to the time of that start
  (the status view's "running since" reads it); moto keeps the first launch's time.
* RunInstances with an AMI the instance type cannot run (g5g is arm64 only, the DLAMIs we
  use are x86_64): EC2 refuses with ``InvalidParameterValue`` (HTTP 400) and creates
  nothing; moto launches.
* RunInstances and StartInstances that would take the region's pending and running vCPUs of
  the type's group (G and VT, P, Standard...) over the account's on-demand quota
  (local_cloud/quotas.py): EC2 refuses with ``VcpuLimitExceeded`` (HTTP 400) and creates or
  starts nothing; moto has no quotas.
* ModifyInstanceAttribute of the instance type while the instance is not stopped: EC2
  refuses with ``IncorrectInstanceState`` (HTTP 400); moto changes it in any state.
* ModifyInstanceAttribute of the user data while the instance is not stopped: the same
  refusal (EC2 changes user data only on a stopped instance); moto changes it in any state.
  Its ``UserData.Value`` is a blob that the SDK base64-encodes once, as EC2 wants it (and
  an empty one clears the user data); moto decodes the blob and then wants base64 again.

All are patches of moto's EC2 model classes rather than checks in the emulator's HTTP
layer: moto's own error serialization then answers as it does for its own checks, and a
launch template's image and type are seen as moto resolves them. moto's backends are per
process, and so are these patches: ``install()`` applies them once for every emulator of
the process.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from local_cloud import quotas, spot

if TYPE_CHECKING:
    from moto.ec2.models.instances import Instance, InstanceBackend, InstanceState

# Set on moto's classes once patched, so a second install() (another Emulator, a test
# that starts its own) does not wrap the wrappers.
_MARK = "_gpu_lab_aws_rules"

# RunInstances and StartInstances over the on-demand vCPU quota (local_cloud/quotas.py): one
# check-and-launch at a time, so two launches at once cannot both fit the last vCPUs.
_QUOTA_LOCK = threading.RLock()

# Instances EC2 does not start anew on StartInstances: their LaunchTime stays.
_ALREADY_STARTED = ("pending", "running")


def architecture_mismatch_message(type_architecture: str, ami_architecture: str) -> str:
    """EC2's wording, word for word: tests and users match on it."""
    return (f"The architecture '{type_architecture}' of the specified instance type does not match the "
            f"architecture '{ami_architecture}' of the specified AMI. Specify an instance type and an AMI "
            "that have matching architectures, and try again. You can use 'describe-instance-types' or "
            "'describe-images' to discover the architecture of the instance type or AMI.")


def _launched_type_and_image(backend: InstanceBackend, image_id: str | None,
                             kwargs: dict[str, Any]) -> tuple[str | None, str | None]:
    """The instance type and AMI a RunInstances call would launch with: its own, else its
    launch template's (moto fills those in later, inside run_instances)."""
    instance_type: str | None = kwargs.get("instance_type")
    if kwargs.get("launch_template"):
        template = backend._get_template_from_args(kwargs["launch_template"]).data
        if kwargs.get("is_instance_type_default") and template.get("InstanceType"):
            instance_type = template["InstanceType"]
        image_id = image_id or template.get("ImageId")
    return instance_type, image_id


def check_architecture(backend: InstanceBackend, image_id: str | None, kwargs: dict[str, Any]) -> None:
    """Raises EC2's error when the AMI's architecture is not one the instance type runs.
    A type missing from moto's catalogue, or an AMI moto does not know or that has no
    architecture, is left to moto, as before."""
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.instance_types import INSTANCE_TYPES

    instance_type, image_id = _launched_type_and_image(backend, image_id, kwargs)
    supported = INSTANCE_TYPES.get(instance_type or "", {}).get("ProcessorInfo", {}).get("SupportedArchitectures")
    ami = backend.amis.get(image_id) if image_id else None  # type: ignore[attr-defined]
    ami_architecture = getattr(ami, "architecture", None)
    if not supported or not ami_architecture or ami_architecture in supported:
        return
    # A type that also runs i386 (m1.small, t2.*) is named by its 64-bit architecture, as EC2 does.
    named = next((a for a in supported if a != "i386"), supported[0])
    raise EC2ClientError("InvalidParameterValue", architecture_mismatch_message(named, ami_architecture))


def check_type_change(instance: Instance, key: str) -> None:
    """EC2 changes an instance's type only while it is stopped (IncorrectInstanceState, HTTP
    400, in EC2's words); moto changes it in any state."""
    from moto.ec2.exceptions import EC2ClientError

    if key == "instance_type" and instance.state != "stopped":
        raise EC2ClientError("IncorrectInstanceState", f"The instance '{instance.id}' is not in the 'stopped' state.")


def check_user_data_change(instance: Instance, key: str) -> None:
    """EC2 changes an instance's user data only while it is stopped, with the same error."""
    from moto.ec2.exceptions import EC2ClientError

    if key == "user_data" and instance.state != "stopped":
        raise EC2ClientError("IncorrectInstanceState", f"The instance '{instance.id}' is not in the 'stopped' state.")


def user_data_of_blob(value: Any) -> Any:
    """moto's parse_user_data for ModifyInstanceAttribute's ``UserData.Value``: moto hands
    over the blob decoded (bytes), which is the user data itself; empty clears it."""
    from moto.core.types import Base64EncodedString
    from moto.ec2.utils import parse_user_data

    if isinstance(value, bytes):
        return Base64EncodedString.from_raw_bytes(value) if value else None
    return parse_user_data(value)


def install() -> None:
    from moto.core.utils import utcnow
    from moto.ec2.models.instances import Instance, InstanceBackend

    if getattr(InstanceBackend, _MARK, False):
        return
    moto_start = Instance.start
    moto_run_instances = InstanceBackend.run_instances

    def start(self: Instance) -> InstanceState:
        previous = moto_start(self)
        if previous.name not in _ALREADY_STARTED:
            self.launch_time = utcnow()
        return previous

    def run_instances(self: InstanceBackend, image_id: str, count: int, user_data: Any,
                      security_group_names: list[str], **kwargs: Any) -> Any:
        # Before moto's run_instances: it stores the reservation first, so a refusal
        # after it would leave one behind.
        check_architecture(self, image_id, kwargs)
        with _QUOTA_LOCK:  # the check and the launch as one, as EC2 counts them
            instance_type, _ = _launched_type_and_image(self, image_id, kwargs)
            quotas.check_vcpus(self, [instance_type or "m1.small"] * int(count),
                               spot=spot.market_options().get("MarketType") == "spot")
            return moto_run_instances(self, image_id, count, user_data, security_group_names, **kwargs)

    moto_start_instances = InstanceBackend.start_instances

    def start_instances(self: InstanceBackend, instance_ids: list[str]) -> Any:
        with _QUOTA_LOCK:
            starting = [i for i in map(self.get_instance, instance_ids) if i.state not in _ALREADY_STARTED]
            for in_spot in (False, True):  # each market against its own quota
                quotas.check_vcpus(self, [i.instance_type for i in starting
                                          if (getattr(i, "lifecycle", None) == "spot") == in_spot], spot=in_spot)
            return moto_start_instances(self, instance_ids)

    moto_modify_instance_attribute = InstanceBackend.modify_instance_attribute

    def modify_instance_attribute(self: InstanceBackend, instance_id: str, key: str, value: Any) -> Any:
        check_type_change(self.get_instance(instance_id), key)
        check_user_data_change(self.get_instance(instance_id), key)
        if key == "user_data" and value in (b"", ""):
            value = None  # cleared: DescribeInstanceAttribute answers no value, as EC2 does
        return moto_modify_instance_attribute(self, instance_id, key, value)

    import moto.ec2.responses.instances as instance_responses

    instance_responses.parse_user_data = user_data_of_blob  # type: ignore[assignment]
    Instance.start = start  # type: ignore[method-assign]
    InstanceBackend.run_instances = run_instances  # type: ignore[method-assign]
    InstanceBackend.start_instances = start_instances  # type: ignore[method-assign]
    InstanceBackend.modify_instance_attribute = modify_instance_attribute  # type: ignore[method-assign]
    setattr(InstanceBackend, _MARK, True)
