"""Disk images in the cOS layout, written and read without privileges.

* :mod:`cosgitops.bootdisk.layout`: partition sizes and offsets (pure).
* :func:`cosgitops.bootdisk.image.write_disk_image`: staging folders -> a GPT disk
  (raw or qcow2), atomically.
* :class:`cosgitops.bootdisk.read.DiskImage`: the partitions and files of a disk, read
  back without mounting.
* :func:`cosgitops.bootdisk.bootable.check_bootable`: can an OS image boot from a disk.
* :func:`cosgitops.bootdisk.medium.write_update_medium`: an update medium (the index and
  the release images) for air-gapped devices.
"""
