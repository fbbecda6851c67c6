"""Azure VM sizes a Batch pool may name (vmSize), with their vCPUs and memory.

Figures are Azure's published ones (memoryInMB as the Compute "list VM sizes" API reports it,
i.e. GiB * 1024). Most families are regular -- memory is a fixed number of GiB per vCPU -- so
they are generated from that rule; the exceptions are listed by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...runtime.cgroups import Limits


@dataclass(frozen=True)
class VmSize:
    name: str
    cores: int
    memory_mib: int

    @property
    def family(self) -> str:
        """The family its dedicated cores count against, as Azure names it in
        dedicatedCoreQuotaPerVMFamily: "Standard_D2s_v3" -> "standardDSv3Family"."""
        match = _FAMILY.match(self.name)
        series, features, rest = match["series"], match["features"], match["rest"]
        if series in _ONE_FAMILY_SERIES:
            return _ONE_FAMILY_SERIES[series]
        if series == "A" and rest == "_v2":  # Av2 and Amv2 share one family
            features = ""
        return f"standard{series}{features.upper()}{rest.replace('_', '')}Family"


# "Standard_D2ads_v5" -> series D, features ads, rest _v5; "Standard_NC4as_T4_v3" -> NC, as, _T4_v3
_FAMILY = re.compile(r"^Standard_(?P<series>[A-Z]+)\d+(?P<features>[a-z]*)(?P<rest>.*)$")
_ONE_FAMILY_SERIES = {"B": "standardBSFamily"}


def _gib(value: float) -> int:
    return int(value * 1024)


def _family(pattern: str, gib_per_core: float, core_counts: list[int],
            overrides: dict[int, float] | None = None) -> list[VmSize]:
    """pattern like "Standard_D{}s_v3"; overrides maps a core count to its memory in GiB."""
    overrides = overrides or {}
    return [VmSize(pattern.format(n), n, _gib(overrides.get(n, n * gib_per_core))) for n in core_counts]


def _explicit(*rows: tuple[str, int, float]) -> list[VmSize]:
    return [VmSize(name, cores, _gib(gib)) for name, cores, gib in rows]


_D_V3 = [2, 4, 8, 16, 32, 48, 64]
_D_V5 = [2, 4, 8, 16, 32, 48, 64, 96]
_E_V3 = [2, 4, 8, 16, 20, 32, 48, 64]
_E_V5 = [2, 4, 8, 16, 20, 32, 48, 64, 96]

_SIZES: list[VmSize] = [
    # Av2: entry level; the "m" variants carry 8 GiB per vCPU.
    *_explicit(("Standard_A1_v2", 1, 2), ("Standard_A2_v2", 2, 4), ("Standard_A4_v2", 4, 8),
               ("Standard_A8_v2", 8, 16), ("Standard_A2m_v2", 2, 16), ("Standard_A4m_v2", 4, 32),
               ("Standard_A8m_v2", 8, 64)),
    # B: burstable.
    *_explicit(("Standard_B1ls", 1, 0.5), ("Standard_B1s", 1, 1), ("Standard_B1ms", 1, 2),
               ("Standard_B2s", 2, 4), ("Standard_B2ms", 2, 8), ("Standard_B4ms", 4, 16),
               ("Standard_B8ms", 8, 32), ("Standard_B12ms", 12, 48), ("Standard_B16ms", 16, 64),
               ("Standard_B20ms", 20, 80)),
    # Dv2 / DSv2: 3.5 GiB per vCPU; the 11-15 sizes are the memory-optimised half (7 GiB).
    *[size for prefix in ("D", "DS") for size in _explicit(
        (f"Standard_{prefix}1_v2", 1, 3.5), (f"Standard_{prefix}2_v2", 2, 7),
        (f"Standard_{prefix}3_v2", 4, 14), (f"Standard_{prefix}4_v2", 8, 28),
        (f"Standard_{prefix}5_v2", 16, 56), (f"Standard_{prefix}11_v2", 2, 14),
        (f"Standard_{prefix}12_v2", 4, 28), (f"Standard_{prefix}13_v2", 8, 56),
        (f"Standard_{prefix}14_v2", 16, 112), (f"Standard_{prefix}15_v2", 20, 140))],
    # General purpose D: 4 GiB per vCPU across v3-v6, Intel and AMD ("a"), with or without
    # local disk ("d").
    *_family("Standard_D{}_v3", 4, _D_V3),
    *_family("Standard_D{}s_v3", 4, _D_V3),
    *_family("Standard_D{}_v4", 4, _D_V3),
    *_family("Standard_D{}s_v4", 4, _D_V3),
    *_family("Standard_D{}d_v4", 4, _D_V3),
    *_family("Standard_D{}ds_v4", 4, _D_V3),
    *_family("Standard_D{}as_v4", 4, _D_V5),
    *_family("Standard_D{}_v5", 4, _D_V5),
    *_family("Standard_D{}s_v5", 4, _D_V5),
    *_family("Standard_D{}d_v5", 4, _D_V5),
    *_family("Standard_D{}ds_v5", 4, _D_V5),
    *_family("Standard_D{}as_v5", 4, _D_V5),
    *_family("Standard_D{}ads_v5", 4, _D_V5),
    *_family("Standard_D{}ls_v5", 2, _D_V5),  # "l": low memory
    *_family("Standard_D{}lds_v5", 2, _D_V5),
    *_family("Standard_D{}s_v6", 4, _D_V5 + [128, 192]),
    *_family("Standard_D{}ds_v6", 4, _D_V5 + [128, 192]),
    *_family("Standard_D{}as_v6", 4, _D_V5),
    *_family("Standard_D{}ads_v6", 4, _D_V5),
    # Memory optimised E: 8 GiB per vCPU, except the largest sizes of v3 and v4.
    *_family("Standard_E{}_v3", 8, _E_V3, {64: 432}),
    *_family("Standard_E{}s_v3", 8, _E_V3, {64: 432}),
    *_family("Standard_E{}_v4", 8, _E_V3, {64: 504}),
    *_family("Standard_E{}s_v4", 8, _E_V3, {64: 504}),
    *_family("Standard_E{}ds_v4", 8, _E_V3, {64: 504}),
    *_family("Standard_E{}as_v4", 8, _E_V5, {96: 672}),
    *_family("Standard_E{}_v5", 8, _E_V5, {96: 672}),
    *_family("Standard_E{}s_v5", 8, _E_V5, {96: 672}),
    *_family("Standard_E{}d_v5", 8, _E_V5, {96: 672}),
    *_family("Standard_E{}ds_v5", 8, _E_V5, {96: 672}),
    *_family("Standard_E{}as_v5", 8, _E_V5, {96: 672}),
    *_family("Standard_E{}ads_v5", 8, _E_V5, {96: 672}),
    *_family("Standard_E{}s_v6", 8, _E_V5 + [128]),
    # Compute optimised F: 2 GiB per vCPU.
    *_family("Standard_F{}s", 2, [1, 2, 4, 8, 16]),
    *_family("Standard_F{}s_v2", 2, [2, 4, 8, 16, 32, 48, 64, 72]),
    # Storage optimised L.
    *_family("Standard_L{}s_v2", 8, [8, 16, 32, 48, 64, 80]),
    *_family("Standard_L{}s_v3", 8, [8, 16, 32, 48, 64, 80]),
    # GPU.
    *_explicit(("Standard_NC6s_v3", 6, 112), ("Standard_NC12s_v3", 12, 224),
               ("Standard_NC24s_v3", 24, 448), ("Standard_NC24rs_v3", 24, 448),
               ("Standard_NC4as_T4_v3", 4, 28), ("Standard_NC8as_T4_v3", 8, 56),
               ("Standard_NC16as_T4_v3", 16, 110), ("Standard_NC64as_T4_v3", 64, 440),
               ("Standard_NC24ads_A100_v4", 24, 220), ("Standard_NC48ads_A100_v4", 48, 440),
               ("Standard_NC96ads_A100_v4", 96, 880), ("Standard_NV12s_v3", 12, 112),
               ("Standard_NV24s_v3", 24, 224), ("Standard_NV48s_v3", 48, 448),
               ("Standard_NV6ads_A10_v5", 6, 55), ("Standard_NV12ads_A10_v5", 12, 110),
               ("Standard_NV18ads_A10_v5", 18, 220), ("Standard_NV36ads_A10_v5", 36, 440),
               ("Standard_NV72ads_A10_v5", 72, 880), ("Standard_ND96asr_v4", 96, 900)),
    # HPC.
    *_explicit(("Standard_HB120rs_v3", 120, 448), ("Standard_HC44rs", 44, 352)),
]


def _key(name: str) -> str:
    # Batch accepts "standard_d2s_v3", "Standard_D2s_v3" and "D2s_v3" alike.
    return name.strip().lower().removeprefix("standard_")


_BY_KEY = {_key(size.name): size for size in _SIZES}


def lookup(name: str) -> VmSize | None:
    """The size named `name` (any case, "Standard_" prefix optional), or None."""
    if not isinstance(name, str):
        return None
    return _BY_KEY.get(_key(name))


def all_sizes() -> list[VmSize]:
    return list(_SIZES)


def families() -> list[str]:
    return sorted({size.family for size in _SIZES})


def limits(name: str) -> Limits | None:
    """What a machine of this size may use (the runtime enforces it), None for an unknown size."""
    size = lookup(name)
    return Limits(size.cores, size.memory_mib) if size is not None else None
