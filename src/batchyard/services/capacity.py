"""How much room the hosts have for machines: what each host reports through the machine
contract (cores, memory), overcommitted by the settings' factor and capped by the settings'
totals when they set any."""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.provider import MachineProvider


@dataclass(frozen=True)
class Room:
    cores: int
    memory_mib: int


def host_room(settings, provider: MachineProvider) -> Room:
    hosts = provider.capacity()
    cores = sum(h.cores for h in hosts) * settings.host_overcommit
    memory = sum(h.memory_mib for h in hosts) * settings.host_overcommit
    if settings.host_cores is not None:
        cores = min(cores, settings.host_cores)
    if settings.host_memory_mib is not None:
        memory = min(memory, settings.host_memory_mib)
    return Room(cores, memory)
