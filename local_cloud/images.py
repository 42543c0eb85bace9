"""CreateImage as EC2 does it, where moto is laxer or lacks it (a lab's shelf, shelve.yml):

* the image is ``pending`` for a while before it is ``available`` (EC2 takes minutes for a
  100 GiB disk; here ``PENDING_S``), so a caller that does not wait for it is caught;
* its root snapshot has the size of the instance's root volume (moto: 15 GiB whatever the disk);
* ``TagSpecifications`` of ``snapshot`` tag the image's snapshots (moto raises NotImplementedError);
* an instance that is not ``running``, ``stopping`` or ``stopped`` is refused with
  ``IncorrectInstanceState`` and nothing is made (moto images a terminated instance too).

moto's own rules stay: DeregisterImage leaves the snapshots (they bill until deleted), and
DeleteSnapshot of a snapshot a registered image uses is refused (``InvalidSnapshot.InUse``).
A patch of moto's AmiBackend, once per process, like aws_rules.py.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moto.ec2.models.amis import AmiBackend

PENDING_S = 1.5
_MARK = "_gpu_lab_images"
_SHELF_AMI: Any = None


def _shelf_ami_class() -> Any:
    global _SHELF_AMI
    if _SHELF_AMI is not None:
        return _SHELF_AMI
    from moto.ec2.models.amis import Ami

    class ImageOfInstance(Ami):
        """An image of an instance's disk: its root size, pending for PENDING_S after it is made."""

        root_gib = 15
        ready_at = 0.0

        @property  # type: ignore[override]
        def state(self) -> str:
            return "pending" if time.monotonic() < self.ready_at else self._state

        @state.setter
        def state(self, value: str) -> None:
            self._state = value

        @property
        def block_device_mappings(self) -> list[dict[str, Any]]:
            return [{"DeviceName": self.root_device_name,
                     "Ebs": {"SnapshotId": self.ebs_snapshot.id, "VolumeSize": self.root_gib,
                             "DeleteOnTermination": True, "VolumeType": "gp3", "Encrypted": True}}]

    _SHELF_AMI = ImageOfInstance
    return _SHELF_AMI


def install() -> None:
    from moto.ec2.exceptions import EC2ClientError, InvalidTaggableResourceType
    from moto.ec2.models.amis import AmiBackend
    from moto.ec2.utils import random_ami_id

    if getattr(AmiBackend, _MARK, False):
        return

    def create_image(self: AmiBackend, instance_id: str, name: str, description: str,
                     tag_specifications: list[dict[str, Any]]) -> Any:
        instance = self.get_instance(instance_id)  # type: ignore[attr-defined]
        if instance.state not in ("running", "stopping", "stopped"):
            raise EC2ClientError("IncorrectInstanceState",
                                 f"The instance '{instance_id}' is not in a state from which it can be imaged.")
        tags: dict[str, list[dict[str, str]]] = {"image": [], "snapshot": []}
        for spec in tag_specifications:
            if spec["ResourceType"] not in tags:
                raise InvalidTaggableResourceType(spec["ResourceType"])
            tags[spec["ResourceType"]] += spec["Tags"]
        root = next((d for name_, d in instance.block_device_mapping.items() if name_ == instance.root_device_name),
                    None)
        ami_id = random_ami_id()
        image = _shelf_ami_class()(self, ami_id, instance=instance, source_ami=None, name=name,
                                   description=description, owner_id=None,
                                   snapshot_description=f"Created by CreateImage({instance_id}) for {ami_id}")
        image.root_gib = int(root.size) if root is not None else 15
        image.ebs_snapshot.volume.size = image.root_gib
        image.root_device_name = instance.root_device_name or image.root_device_name
        image.ready_at = time.monotonic() + PENDING_S
        for tag in tags["image"]:
            image.add_tag(tag["Key"], tag["Value"])
        for tag in tags["snapshot"]:
            image.ebs_snapshot.add_tag(tag["Key"], tag["Value"])
        self.amis[ami_id] = image
        return image

    AmiBackend.create_image = create_image  # type: ignore[method-assign]
    setattr(AmiBackend, _MARK, True)
