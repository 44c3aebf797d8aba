"""QEMU guests for boot tests and ``demo --boot``.

* :class:`cosgitops.vm.machine.Machine`: a UEFI machine; ``boot()`` is one power-on
  with its own serial log, ``kill()`` a power cut.
* :mod:`cosgitops.vm.events`: ``COSGITOPS {json}`` events and lines from serial logs.
* :mod:`cosgitops.vm.host`: QEMU, OVMF, and whether KVM really works here.
"""
